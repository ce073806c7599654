"""What a lead must look like. Every field error is reported, with its reason."""

import orjson
from django.conf import settings
from rest_framework import serializers

from workers.queues import TIERS


class LeadSerializer(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    phone = serializers.CharField(max_length=40, required=False, allow_blank=True)
    company = serializers.CharField(max_length=200, required=False, allow_blank=True)
    source = serializers.CharField(max_length=100, required=False, allow_blank=True)
    campaign_id = serializers.CharField(max_length=100, required=False, allow_blank=True)
    region = serializers.CharField(max_length=50, required=False, allow_blank=True)
    priority = serializers.ChoiceField(choices=TIERS, default="normal")
    payload = serializers.JSONField(required=False)

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError(
                {"non_field_errors": ["a lead must be a JSON object"]}
            )
        unknown = sorted(set(data) - set(self.fields))
        value = {}
        errors = {}
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            errors = exc.detail
        for field in unknown:
            errors[field] = ["unknown field"]
        if errors:
            raise serializers.ValidationError(errors)
        return value

    def validate_payload(self, payload):
        if payload is None:
            return {}
        if not isinstance(payload, dict):
            raise serializers.ValidationError("must be a JSON object")
        size = len(orjson.dumps(payload))
        if size > settings.LEAD_PAYLOAD_MAX_BYTES:
            raise serializers.ValidationError(
                f"is {size} bytes; the limit is {settings.LEAD_PAYLOAD_MAX_BYTES} bytes"
            )
        return payload
