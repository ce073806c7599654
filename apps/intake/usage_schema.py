"""The receipt endpoint's contract: GET /api/v1/usage?from=…&to=… (apps/intake/usage_api.py),
its query, its answer, and the OpenAPI description with an example for every answer."""

from datetime import UTC, datetime, timedelta

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers

from apps.intake.contract import Error
from apps.intake.schema import WWW_AUTHENTICATE, _example, _read_errors, _retry_after_header
from apps.intake.schema_examples import UNAUTHENTICATED, error

# Before it, no hour can hold a lead (and date arithmetic near year 1 would overflow).
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
DEFAULT_SPAN = timedelta(hours=24)
BAD_RANGE = "give `from` and `to` as ISO 8601 date-times, `from` first, at most 31 days apart"


class UsageQuery(serializers.Serializer):
    """`from` and `to` (ISO 8601; without an offset: UTC). Default: the last 24 hours."""

    # `from` is a Python keyword: declared through the class namespace.
    locals()["from"] = serializers.DateTimeField(
        required=False,
        default_timezone=UTC,
        help_text="Start (ISO 8601, e.g. 2026-12-01T00:00:00Z), counted from its hour. "
        "Default: 24 hours before `to`.",
    )
    to = serializers.DateTimeField(
        required=False,
        default_timezone=UTC,
        help_text="End, exclusive (ISO 8601). Default: now (the current hour is included).",
    )

    def validate(self, attrs: dict) -> dict:
        end = attrs.get("to") or datetime.now(tz=UTC)
        start = attrs.get("from") or end - DEFAULT_SPAN
        for name, moment in (("from", start), ("to", end)):
            if not EARLIEST <= moment < LATEST:
                raise serializers.ValidationError(
                    {name: [f"must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}"]}
                )
        if start >= end:
            raise serializers.ValidationError({"from": ["must be before `to`"]})
        days = settings.USAGE_RANGE_MAX_DAYS
        if end - start > timedelta(days=days):
            raise serializers.ValidationError({"to": [f"at most {days} days after `from`"]})
        return {"from": start, "to": end}


class UsageHour(serializers.Serializer):
    """One hour of the tenant's receipt."""

    hour = serializers.DateTimeField(help_text="The hour's start, UTC.")
    accepted = serializers.IntegerField(min_value=0, help_text="Leads accepted (202).")
    demoted = serializers.IntegerField(
        min_value=0, help_text="Of those: sent as critical, accepted as normal (no credit)."
    )
    duplicates = serializers.IntegerField(min_value=0, help_text="Answered with the original.")
    refused_ip_rate = serializers.IntegerField(min_value=0, help_text="Refused: per-IP rate.")
    refused_tenant_rate = serializers.IntegerField(min_value=0, help_text="Refused: your rate.")
    refused_hourly_budget = serializers.IntegerField(
        min_value=0, help_text="Refused: your hourly budget was spent."
    )
    refused_backpressure = serializers.IntegerField(
        min_value=0, help_text="Refused: the tier's backlog was over its bound."
    )
    sampled = serializers.IntegerField(
        min_value=0, help_text="Leads sampled out under severe overload: their CRM sync waits."
    )
    deferred = serializers.IntegerField(
        min_value=0, help_text="Other work deferred (enrichment shed or degraded, paused tiers)."
    )
    backfilled = serializers.IntegerField(min_value=0, help_text="Deferred work done since.")
    quarantined = serializers.IntegerField(
        min_value=0, help_text="Leads that failed a stage for a reason of their own."
    )
    dead_lettered = serializers.IntegerField(min_value=0, help_text="Leads the CRM gave up on.")
    synced = serializers.IntegerField(min_value=0, help_text="Leads delivered to your CRM.")
    synced_p50_seconds = serializers.FloatField(
        allow_null=True, help_text="Median seconds from received to synced, of those."
    )
    synced_p99_seconds = serializers.FloatField(allow_null=True, help_text="99th percentile.")


class UsageReceipt(serializers.Serializer):
    """The tenant's receipt: one row per hour, oldest first, the current hour included."""

    # The answer's `from` (a keyword, so declared as `to` is, through the namespace).
    locals()["from"] = serializers.DateTimeField(help_text="As asked (or the default).")
    to = serializers.DateTimeField(help_text="As asked (or the default).")
    hours = UsageHour(many=True)


_HOUR = {
    "hour": "2026-12-01T14:00:00Z",
    "accepted": 1180,
    "demoted": 12,
    "duplicates": 3,
    "refused_ip_rate": 0,
    "refused_tenant_rate": 40,
    "refused_hourly_budget": 0,
    "refused_backpressure": 215,
    "sampled": 0,
    "deferred": 310,
    "backfilled": 290,
    "quarantined": 1,
    "dead_lettered": 0,
    "synced": 1164,
    "synced_p50_seconds": 2.4,
    "synced_p99_seconds": 41.7,
}
RECEIPT = {
    "from": "2026-12-01T14:00:00Z",
    "to": "2026-12-01T15:30:00Z",
    "hours": [
        _HOUR,
        {
            **{name: 0 for name in _HOUR},
            "hour": "2026-12-01T15:00:00Z",
            "accepted": 20,
            "synced": 18,
            "synced_p50_seconds": 1.1,
            "synced_p99_seconds": 1.9,
        },
    ],
}
BAD_FROM = error(
    "invalid",
    BAD_RANGE,
    {
        "from": [
            "Datetime has wrong format. Use one of these formats instead: "
            "YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]."
        ]
    },
)
TOO_LONG = error(
    "invalid",
    BAD_RANGE,
    {"to": ["at most 31 days after `from`"]},
)

usage_retrieve_schema = extend_schema(
    operation_id="usage_retrieve",
    summary="Your overload receipt, per hour",
    description="Per UTC hour: what the intake answered your leads (accepted, demoted, "
    "duplicates, refused by each limit) and what became of them (sampled out, deferred, "
    "backfilled, quarantined, dead-lettered, synced, with the p50 and p99 time from received to "
    "synced). Only your tenant's. The current hour is included and still growing; an hour's "
    "pipeline figures may still change for two hours after it ends.",
    tags=["usage"],
    request=None,
    parameters=[UsageQuery, _retry_after_header([429, 503]), WWW_AUTHENTICATE],
    responses={
        200: OpenApiResponse(
            UsageReceipt, "One row per hour, oldest first.", [_example("Receipt", 200, RECEIPT)]
        ),
        400: OpenApiResponse(
            Error,
            "`from` or `to` is not an ISO 8601 date-time, `from` is not before `to`, or they are "
            "more than 31 days apart (the field is named).",
            [_example("Not a date", 400, BAD_FROM), _example("Too long", 400, TOO_LONG)],
        ),
        401: OpenApiResponse(
            Error, "No valid API key.", [_example("No key", 401, UNAUTHENTICATED)]
        ),
        **_read_errors(),
    },
)
