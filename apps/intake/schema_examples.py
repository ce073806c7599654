"""The schema's example values (apps/intake/schema.py): one for each answer of each operation.

tests/intake/test_schema_served.py validates every one against the schema it illustrates.
"""

TRACE_ID = "9b1f0d5e-3c0a-4a44-9a53-1c1f6f0b7d2e"
ETA = "2026-11-26T21:40:03.412081+00:00"


def error(code: str, detail: str, fields: dict | None = None) -> dict:
    return {"error": code, "detail": detail, **({"fields": fields} if fields else {})}


ACCEPTED = {
    "trace_id": TRACE_ID,
    "status": "queued",
    "tier": "critical",
    "demoted": False,
    "position": 1,
    "estimated_completion": ETA,
}
DUPLICATE = {"trace_id": TRACE_ID, "duplicate": True, "tier": "critical"}
TENANT_RATE = {
    "error": "rate_limited",
    "detail": "your tenant's request rate limit is reached",
    "limit": "tenant_rate",
    "retry_after": 1,
}
INVALID = error(
    "invalid",
    "the lead is not valid",
    {"email": ["Enter a valid email address."], "emial": ["unknown field"]},
)
PARSE_ERROR = error("parse_error", "JSON parse error - unexpected end of data: line 1 column 2")
BAD_KEY = error(
    "invalid_header",
    "the Idempotency-Key header must be 1 to 255 printable ASCII characters",
    {"Idempotency-Key": ["has 300 characters; the limit is 255"]},
)
KEY_REUSED = error(
    "idempotency_key_reused",
    "this Idempotency-Key was sent with another lead in the last 24 h; nothing was accepted: "
    "a retry sends the same lead with the same key, a new lead a new key",
)
UNAUTHENTICATED = error(
    "not_authenticated", "an API key is required: 'Authorization: Bearer <api key>'"
)
UNSUPPORTED = error(
    "unsupported_media_type", "send the lead as JSON with 'Content-Type: application/json'"
)
UNAVAILABLE = error("unavailable", "Redis is unavailable; try again shortly (nothing was accepted)")
HEADER_TOO_LARGE = error(
    "header_too_large",
    "a header field is over 8190 bytes (name and value), or there are over 100 of them",
)


LEAD = {
    "email": "ada@analytical.io",
    "name": "Ada",
    "company": "Analytical Engines",
    "phone": "+44 20 7946 0958",
    "source": "google_ads",
    "region": "gb",
    "priority": "critical",
    "payload": {"utm_campaign": "spring"},
}


BATCH_ACCEPTED = {
    "accepted": 1,
    "duplicates": 1,
    "refused": 0,
    "invalid": 1,
    "results": [
        {"index": 0, **ACCEPTED},
        {"index": 1, **DUPLICATE},
        {"index": 2, "error": "invalid", "fields": {"email": ["This field is required."]}},
    ],
}
BATCH_DUPLICATES = {
    "accepted": 0,
    "duplicates": 1,
    "refused": 0,
    "invalid": 0,
    "results": [{"index": 0, **DUPLICATE}],
}
BATCH_REPLAYED = {
    "accepted": 2,
    "duplicates": 0,
    "refused": 0,
    "invalid": 0,
    "results": [
        {"index": 0, **ACCEPTED, "replayed": True},
        {"index": 1, **ACCEPTED, "trace_id": "4c8e2a71-0f3b-4d5e-8a9c-2b7d6e1f3a50", "position": 2},
    ],
}
BATCH_INVALID = {
    "accepted": 0,
    "duplicates": 0,
    "refused": 0,
    "invalid": 1,
    "results": [
        {
            "index": 0,
            "error": "invalid",
            "fields": {"priority": ['"urgent" is not a valid choice.']},
        }
    ],
}
BATCH_REFUSED = {
    "accepted": 0,
    "duplicates": 0,
    "refused": 1,
    "invalid": 0,
    "results": [
        {
            "index": 0,
            "error": "rate_limited",
            "limit": "hourly_budget",
            "detail": "your tenant's hourly lead budget is spent",
            "retry_after": 1800,
        }
    ],
}


QUEUED = {
    "trace_id": TRACE_ID,
    "status": "queued",
    "tier": "critical",
    "position": 12,
    "estimated_completion": ETA,
    "received_at": "2026-11-26T21:40:03.102081+00:00",
}
SYNCED = {
    "trace_id": TRACE_ID,
    "status": "synced",
    "tier": "critical",
    "score": 100,
    "qualified": True,
    "ai_degraded": False,
    "stages": {
        "qualification": {"score": 100, "qualified": True, "reasons": ["business_email"]},
        "enrichment": {"provider": "local", "degraded": False, "data": {"industry": "software"}},
        "crm": {"adapter": "local", "response": {"recorded": 1}},
    },
    "timestamps": {
        "received_at": "2026-11-26T21:40:03.102081+00:00",
        "qualified_at": "2026-11-26T21:40:03.512081+00:00",
        "enriched_at": "2026-11-26T21:40:04.012081+00:00",
        "synced_at": "2026-11-26T21:40:04.402081+00:00",
    },
}
