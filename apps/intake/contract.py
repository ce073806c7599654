"""The public intake API's contract, in DRF serializers: what a lead is, and every answer's shape.

This is the API's one description. drf-spectacular turns it into the OpenAPI schema
(/api/schema/, apps/intake/schema.py), and the DRF views of apps/intake/contract_views.py run
it as a complete, slower implementation of the two POSTs. The hot path (apps/intake/fast_post.py,
validation.py, json_body.py) is hand-written for speed and held equal to this contract by a
differential test (tests/intake/test_contract_differential.py): the same requests, valid and
invalid, give the same status, headers and body through both.

The fields are DRF's own (their messages are the API's), built from the limits validation.py
keeps (one place for each number). Where the API is stricter than DRF's defaults, a field here
says so: a field reports its first flaw only, a non-text value is refused before anything looks
into it, and what no later stage could store (validation.py's "plus" rules) is refused by name.
Those rules have no DRF field: the payload's walk (validation.payload_flaw) is shared, one
definition; what the differential test holds the hot path to there is how it applies it (only
on a body that may need it, json_body.py's `deep`).
"""

import orjson
from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers
from rest_framework.fields import empty, get_error_detail
from rest_framework.settings import api_settings

from apps.intake.admission import LIMIT_DETAILS
from apps.intake.validation import (
    EMAIL_MAX_LENGTH,
    FIELDS,
    PAYLOAD_DEPTH_MAX,
    TEXT_FIELDS,
    payload_flaw,
)
from apps.leads.models import LeadStatus
from leadflow.queues import TIERS

ECHO_MAX = 50  # characters of a refused priority repeated in its error message
LIMITS = tuple(LIMIT_DETAILS)  # what a 429 names (erasure_rate: the erasure endpoint's)
MODES = ("normal", "thin", "severe", "emergency")  # X-LeadFlow-Mode


def _is_text_like(value) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


class StorableCharField(serializers.CharField):
    """DRF's CharField (numbers are taken as their text, whitespace trimmed, NUL and lone
    surrogates refused), reporting only the first flaw, and refusing a list or an object before
    looking into it (str() of one nested 1,000 deep would recurse past Python's limit)."""

    default_error_messages = {"not_text": "Not a valid string."}

    def run_validation(self, data=empty):
        if data is not empty and data is not None and not _is_text_like(data):
            self.fail("not_text")
        return super().run_validation(data)

    def run_validators(self, value):
        for validator in self.validators:
            try:
                validator(value)
            except DjangoValidationError as exc:
                raise serializers.ValidationError(get_error_detail(exc)) from None


def _local_part_ascii(email: str) -> None:
    # Django's user-part regex is ASCII but case-insensitive: İ, ı, ſ and the Kelvin sign pass
    # it as i, s and k (README "Lead fields").
    if not email.rpartition("@")[0].isascii():
        raise serializers.ValidationError(
            "Enter a valid email address: the part before the @ must be ASCII."
        )


def _lowercased_length(email: str) -> None:
    # Pool A lower-cases e-mails, and İ lower-cases to two characters.
    lowered = len(email.lower())
    if lowered > EMAIL_MAX_LENGTH:
        raise serializers.ValidationError(
            f"Ensure this field has no more than {EMAIL_MAX_LENGTH} characters once "
            f"lower-cased (it has {lowered})."
        )


class LeadEmailField(StorableCharField, serializers.EmailField):
    def __init__(self, **kwargs):
        super().__init__(max_length=EMAIL_MAX_LENGTH, **kwargs)
        # After the length, NUL and surrogate checks, before Django's EmailValidator (last).
        self.validators[-1:-1] = [_local_part_ascii, _lowercased_length]


class TierField(serializers.ChoiceField):
    """critical | normal | low; a refused value is echoed up to ECHO_MAX characters, and a list
    or an object is named, not echoed."""

    def __init__(self, **kwargs):
        super().__init__(choices=list(TIERS), **kwargs)

    def to_internal_value(self, data):
        if isinstance(data, str) and data in TIERS:
            return data
        if isinstance(data, list | dict):
            kind = "array" if isinstance(data, list) else "object"
            raise serializers.ValidationError(f"a JSON {kind} is not a valid choice.")
        shown = str(data)
        if len(shown) > ECHO_MAX:
            shown = shown[:ECHO_MAX] + "…"
        self.fail("invalid_choice", input=shown)


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": True,
        "nullable": True,
        "description": (
            "Anything the tenant's CRM should receive: a JSON object of at most "
            f"{settings.LEAD_PAYLOAD_MAX_BYTES} bytes (as compact JSON), nested at most "
            f"{PAYLOAD_DEPTH_MAX} levels (the payload itself the first), with no NUL or lone "
            "surrogate in a key or a string, and finite numbers that fit a 64-bit float. null "
            "is taken as {}."
        ),
    }
)
class PayloadField(serializers.Field):
    default_error_messages = {"not_object": "must be a JSON object"}

    def validate_empty_values(self, data):
        if data is None:
            return True, {}
        return super().validate_empty_values(data)

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            self.fail("not_object")
        flaw = payload_flaw(data, deep=True)
        if flaw:
            raise serializers.ValidationError(flaw)
        size = len(orjson.dumps(data))
        if size > settings.LEAD_PAYLOAD_MAX_BYTES:
            raise serializers.ValidationError(
                f"is {size} bytes; the limit is {settings.LEAD_PAYLOAD_MAX_BYTES} bytes"
            )
        return data

    def to_representation(self, value):
        return value


def _text_field(name: str) -> StorableCharField:
    """An optional text field; blank is allowed, null is not."""
    return StorableCharField(
        max_length=TEXT_FIELDS[name],
        required=False,
        allow_blank=True,
        help_text=f"At most {TEXT_FIELDS[name]} characters once trimmed; a number is taken as "
        "its text; no NUL or lone surrogate.",
    )


class LeadRequest(serializers.Serializer):
    """One lead. Unknown fields are refused: a typo should not silently drop data."""

    default_error_messages = {"invalid": "a lead must be a JSON object"}

    email = LeadEmailField(
        help_text=f"Required; a valid address of at most {EMAIL_MAX_LENGTH} characters, also "
        "once lower-cased, ASCII before the @."
    )
    name = _text_field("name")
    phone = _text_field("phone")
    company = _text_field("company")
    source = _text_field("source")
    campaign_id = _text_field("campaign_id")
    region = _text_field("region")
    priority = TierField(default="normal", help_text="The lead's tier.")
    payload = PayloadField(required=False, allow_null=True)

    def validate_empty_values(self, data):
        if data is None:  # not DRF's "No data provided": null is a value that is not an object
            raise serializers.ValidationError(
                {api_settings.NON_FIELD_ERRORS_KEY: [self.error_messages["invalid"]]},
                code="invalid",
            )
        return super().validate_empty_values(data)

    def to_internal_value(self, data):
        try:
            lead = super().to_internal_value(data)
            errors = {}
        except serializers.ValidationError as exc:
            if not isinstance(data, dict):
                raise
            lead, errors = None, dict(exc.detail)
        for name in sorted(data.keys() - FIELDS):
            errors[name] = [serializers.ErrorDetail("unknown field", code="unknown")]
        if errors:
            raise serializers.ValidationError(errors)
        return lead


assert list(LeadRequest().fields) == ["email", *TEXT_FIELDS, "priority", "payload"]
assert set(LeadRequest().fields) == FIELDS


@extend_schema_field(LeadRequest)
class BatchLeadField(serializers.Field):
    """A lead as sent: LeadRequest checks each on its own (contract_views.py), so an invalid
    lead, even null, gets its errors in its result and does not stop the others."""

    def validate_empty_values(self, data):
        if data is None:  # a null lead is the view's to refuse, not the batch's
            return True, None
        return super().validate_empty_values(data)

    def to_internal_value(self, data):
        return data


_NOT_A_LIST = "must be a non-empty list"


class BatchRequest(serializers.Serializer):
    """{"leads": [...]}; other keys are ignored. A body that is not an object has no leads."""

    leads = serializers.ListField(
        child=BatchLeadField(),
        allow_empty=False,
        min_length=1,
        max_length=settings.BATCH_MAX_LEADS,
        error_messages={
            "required": _NOT_A_LIST,
            "null": _NOT_A_LIST,
            "not_a_list": _NOT_A_LIST,
            "empty": _NOT_A_LIST,
            "min_length": _NOT_A_LIST,
            "max_length": f"at most {settings.BATCH_MAX_LEADS} leads",
        },
        help_text=f"1 to {settings.BATCH_MAX_LEADS} leads.",
    )


# --- Answers ---------------------------------------------------------------------------------


class FieldErrors(serializers.DictField):
    """{field: [reasons]}; a batch's lead that is not an object is under "non_field_errors"."""

    child = serializers.ListField(child=serializers.CharField())


class Error(serializers.Serializer):
    """Every error: {"error": code, "detail": text, "fields"?: {field: [reasons]}}."""

    error = serializers.CharField(
        help_text="A short code: invalid, parse_error, batch_too_large, invalid_header, "
        "bad_host, not_authenticated, authentication_failed, body_too_large, "
        "unsupported_media_type, idempotency_key_reused, not_found, unavailable, server_error."
    )
    detail = serializers.CharField(help_text="What went wrong, for a person.")
    fields = FieldErrors(required=False, help_text="Each refused field (or header) and why.")


class RateLimited(serializers.Serializer):
    """429: the limit hit and when to come back (also in the Retry-After header)."""

    error = serializers.ChoiceField(choices=["rate_limited"])
    detail = serializers.CharField()
    limit = serializers.ChoiceField(choices=list(LIMITS))
    retry_after = serializers.IntegerField(min_value=1, help_text="Whole seconds.")


class LeadAccepted(serializers.Serializer):
    trace_id = serializers.UUIDField(help_text="The lead's id: GET /api/v1/leads/{trace_id}.")
    status = serializers.ChoiceField(choices=[LeadStatus.QUEUED.value])
    tier = serializers.ChoiceField(choices=list(TIERS), help_text="The tier it was accepted in.")
    demoted = serializers.BooleanField(
        help_text="Asked critical, accepted as normal: the tenant's critical credits are spent."
    )
    position = serializers.IntegerField(min_value=1, help_text="Leads ahead of it, itself too.")
    estimated_completion = serializers.DateTimeField(format=None)
    retry_after = serializers.IntegerField(
        required=False,
        min_value=1,
        help_text="Only when the mode is not normal: poll the status no sooner (seconds).",
    )


@extend_schema_field({"type": "boolean", "enum": [True]})
class TrueField(serializers.BooleanField):
    pass


class LeadDuplicate(serializers.Serializer):
    trace_id = serializers.UUIDField(help_text="The original lead's trace id.")
    duplicate = TrueField()
    tier = serializers.ChoiceField(choices=list(TIERS))


class _Indexed(serializers.Serializer):
    index = serializers.IntegerField(min_value=0, help_text="The lead's place in the batch.")


class BatchLeadAccepted(_Indexed, LeadAccepted):
    replayed = TrueField(
        required=False,
        help_text="Only on a retry of a batch with the same Idempotency-Key: this lead was "
        "accepted by an earlier try, and this is its original result.",
    )


class BatchLeadDuplicate(_Indexed, LeadDuplicate):
    pass


class BatchLeadRefused(_Indexed):
    """A lead refused by the hourly budget or backpressure (RateLimited's keys, limit first)."""

    error = serializers.ChoiceField(choices=["rate_limited"])
    limit = serializers.ChoiceField(choices=list(LIMITS))
    detail = serializers.CharField()
    retry_after = serializers.IntegerField(min_value=1, help_text="Whole seconds.")


class BatchLeadInvalid(_Indexed):
    error = serializers.ChoiceField(choices=["invalid"])
    fields = FieldErrors()


BATCH_RESULTS = (BatchLeadAccepted, BatchLeadDuplicate, BatchLeadRefused, BatchLeadInvalid)


@extend_schema_field(
    PolymorphicProxySerializer(
        component_name="BatchLeadResult",
        serializers=list(BATCH_RESULTS),
        resource_type_field_name=None,
    )
)
class BatchResultField(serializers.Field):
    """One lead's result: whichever of BATCH_RESULTS it is (the view picks the serializer)."""

    def to_representation(self, value):
        return value


class BatchAnswer(serializers.Serializer):
    accepted = serializers.IntegerField(
        min_value=0,
        help_text="Leads accepted: by this request, or (`replayed`) by an earlier one with the "
        "same Idempotency-Key.",
    )
    duplicates = serializers.IntegerField(min_value=0)
    refused = serializers.IntegerField(min_value=0)
    invalid = serializers.IntegerField(min_value=0)
    results = serializers.ListField(
        child=BatchResultField(), help_text="One result per lead, in the order sent."
    )
