"""The erasure endpoint's contract: DELETE /api/v1/leads?email=… (apps/intake/erasure_api.py),
its query, its answer, and the OpenAPI description with an example for every answer."""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers

from apps.intake.contract import Error, LeadEmailField
from apps.intake.schema import (
    WWW_AUTHENTICATE,
    RateLimited,
    _example,
    _read_errors,
    _retry_after_header,
)
from apps.intake.schema_examples import UNAUTHENTICATED, UNAVAILABLE, error


class ErasureQuery(serializers.Serializer):
    email = LeadEmailField(
        help_text="The person's address, as sent with their leads (any case, outer spaces "
        "ignored: matched as the intake stores it)."
    )


class LeadsErased(serializers.Serializer):
    """What an erasure removed; a repeat answers the same shape with zeros."""

    email_sha256 = serializers.CharField(
        min_length=64,
        max_length=64,
        help_text="SHA-256 of the normalized address: how the audit names the request.",
    )
    leads = serializers.IntegerField(min_value=0, help_text="Leads deleted.")
    enrichments = serializers.IntegerField(min_value=0, help_text="Their AI enrichments.")
    crm_syncs = serializers.IntegerField(min_value=0, help_text="Their CRM delivery records.")
    dead_letters = serializers.IntegerField(min_value=0, help_text="Their dead letters.")
    deferred_work = serializers.IntegerField(min_value=0, help_text="Their deferred work.")
    redis_keys = serializers.IntegerField(
        min_value=0, help_text="Their Redis keys (status, dedup, delivery marks)."
    )


ERASED = {
    "email_sha256": "1f8a4cf3bc3b4cf3c4f4b0b1de3c0e4e1c6e5dd7d1f2d4b9f1a9d6c5e3b2a190",
    "leads": 2,
    "enrichments": 1,
    "crm_syncs": 1,
    "dead_letters": 0,
    "deferred_work": 0,
    "redis_keys": 3,
}
ERASURES_TOO_FAST = {
    "error": "rate_limited",
    "detail": "more than 100 erasures in a burst, or 10 a second, for this tenant",
    "limit": "erasure_rate",
    "retry_after": 1,
}
ERASED_AGAIN = {**ERASED, **{key: 0 for key in ERASED if key != "email_sha256"}}
NO_EMAIL = error(
    "invalid",
    "give the address whose leads to erase: ?email=…",
    {"email": ["This field is required."]},
)
BAD_EMAIL = error(
    "invalid",
    "give the address whose leads to erase: ?email=…",
    {"email": ["Enter a valid email address."]},
)

leads_erase_schema = extend_schema(
    operation_id="leads_erase",
    summary="Erase a person's leads",
    description="Deletes every lead of your tenant sent with this e-mail address, with everything "
    "LeadFlow kept of them (stage results, CRM records, dead letters, Redis keys); audited by "
    "a hash of the address. Idempotent: a repeat answers 200 with zeros. A lead sent moments "
    "ago may still be queued (not stored yet): send the request again once it is processed.",
    tags=["leads"],
    request=None,
    parameters=[ErasureQuery, _retry_after_header([429, 503]), WWW_AUTHENTICATE],
    responses={
        200: OpenApiResponse(
            LeadsErased,
            "Erased (zeros: nothing was left to erase).",
            [_example("Erased", 200, ERASED), _example("A repeat", 200, ERASED_AGAIN)],
        ),
        400: OpenApiResponse(
            Error,
            "No address, or not a valid one (the field is named).",
            [_example("No address", 400, NO_EMAIL), _example("Not an address", 400, BAD_EMAIL)],
        ),
        401: OpenApiResponse(
            Error, "No valid API key.", [_example("No key", 401, UNAUTHENTICATED)]
        ),
        **_read_errors(),  # its own 429 and 503 below
        429: OpenApiResponse(
            RateLimited,
            "Too many erasures from this tenant (LEADFLOW_ERASURE_RATE_PER_SECOND, a burst of "
            "LEADFLOW_ERASURE_BURST), or too many requests without a valid key from this address: "
            "`limit` says which; wait Retry-After seconds.",
            [
                _example("Too many erasures", 429, ERASURES_TOO_FAST),
                *_read_errors()[429].examples,
            ],
        ),
        503: OpenApiResponse(
            Error,
            "PostgreSQL or Redis did not answer; nothing was erased in PostgreSQL: send it again.",
            [_example("Down", 503, UNAVAILABLE)],
        ),
    },
)
