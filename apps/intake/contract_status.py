"""The contract of GET /api/v1/leads/{trace_id} (apps/intake/api.py): the two shapes of a
lead's status, queued (in Redis) or stored (in PostgreSQL, apps/leads/selectors.py), as the
schema describes them (apps/intake/schema.py)."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.leads.models import LeadStatus
from leadflow.queues import TIERS

# A lead's status once pool A wrote it ("queued" is only in Redis).
STORED_STATUSES = tuple(status for status in LeadStatus.values if status != LeadStatus.QUEUED)


class LeadQueuedStatus(serializers.Serializer):
    """Admitted, not yet written by pool A: its place in the backlog now (from Redis)."""

    trace_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=[LeadStatus.QUEUED.value])
    tier = serializers.ChoiceField(choices=list(TIERS))
    position = serializers.IntegerField(min_value=1)
    estimated_completion = serializers.DateTimeField(format=None)
    received_at = serializers.DateTimeField(format=None)


class QualificationStage(serializers.Serializer):
    score = serializers.IntegerField(allow_null=True)
    qualified = serializers.BooleanField(allow_null=True)
    reasons = serializers.ListField(child=serializers.CharField())


@extend_schema_field({"description": "Any JSON value, as the CRM answered."})
class AnyJSON(serializers.Field):
    def to_representation(self, value):
        return value


class EnrichmentStage(serializers.Serializer):
    provider = serializers.CharField()
    degraded = serializers.BooleanField()
    data = serializers.DictField()


class CrmStage(serializers.Serializer):
    adapter = serializers.CharField()
    response = AnyJSON()


class LeadStages(serializers.Serializer):
    qualification = QualificationStage()
    enrichment = EnrichmentStage(allow_null=True)
    crm = CrmStage(allow_null=True)


class LeadTimestamps(serializers.Serializer):
    received_at = serializers.DateTimeField(format=None)
    qualified_at = serializers.DateTimeField(format=None, allow_null=True)
    enriched_at = serializers.DateTimeField(format=None, allow_null=True)
    synced_at = serializers.DateTimeField(format=None, allow_null=True)


class LeadFailure(serializers.Serializer):
    stage = serializers.CharField(help_text="qualification, enrichment or crm.")
    reason = serializers.CharField()
    failed_at = serializers.DateTimeField(format=None, allow_null=True)


class LeadStoredStatus(serializers.Serializer):
    """Written by pool A: where it is in the pipeline, its score and each stage's result."""

    trace_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=list(STORED_STATUSES))
    tier = serializers.ChoiceField(choices=list(TIERS))
    score = serializers.IntegerField(allow_null=True)
    qualified = serializers.BooleanField(allow_null=True)
    ai_degraded = serializers.BooleanField()
    stages = LeadStages()
    timestamps = LeadTimestamps()
    duplicate_of = serializers.UUIDField(
        required=False, help_text="Only when status is duplicate: the lead it repeats."
    )
    failure = LeadFailure(required=False, help_text="Only when status is failed (quarantined).")
