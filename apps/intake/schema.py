"""The OpenAPI schema of the public API (drf-spectacular): each operation's answers, headers and
examples, the Bearer scheme, and what drf-spectacular cannot say from the serializers alone.

The bodies are apps/intake/contract.py's serializers. Here: which status answers with which
body and headers (every status the API can answer, gunicorn's 431 included), an example for
each, and a postprocessing hook that makes the described objects closed (additionalProperties
false: an undocumented key in an answer fails the schemathesis run) and adds the links from a
POST's trace_id to the GET (schemathesis follows them in its stateful run).
"""

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
)

from apps.intake.contract import (
    BATCH_RESULTS,
    MODES,
    BatchAnswer,
    BatchRequest,
    Error,
    LeadAccepted,
    LeadDuplicate,
    LeadRequest,
    RateLimited,
)
from apps.intake.contract_status import LeadQueuedStatus, LeadStoredStatus
from apps.intake.schema_examples import (
    ACCEPTED,
    BAD_KEY,
    BATCH_ACCEPTED,
    BATCH_DUPLICATES,
    BATCH_INVALID,
    BATCH_REFUSED,
    BATCH_REPLAYED,
    DUPLICATE,
    HEADER_TOO_LARGE,
    INVALID,
    KEY_REUSED,
    LEAD,
    PARSE_ERROR,
    QUEUED,
    SYNCED,
    TENANT_RATE,
    UNAUTHENTICATED,
    UNAVAILABLE,
    UNSUPPORTED,
    error,
)


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "apps.intake.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A tenant's API key: `Authorization: Bearer <key>` "
            "(`manage.py create_tenant`, or the demo key `make run` prints).",
        }


# --- Headers ---------------------------------------------------------------------------------

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        # Printable ASCII; HTTP drops a header value's outer spaces, so none are described.
        "pattern": "^[!-~]([ -~]*[!-~])?$",
    },
    OpenApiParameter.HEADER,
    description="Makes a retry safe for 24 h per tenant (README, Idempotency). One lead: the "
    "same key with the same lead is answered with the original answer (status and body) and "
    "`Idempotent-Replayed: true`; the same key with another lead is 422 "
    "`idempotency_key_reused`, and nothing is accepted. A batch (the batch key rule): each "
    "lead's key is this key and the lead itself (its canonical JSON), never its index, and "
    "never one lead's key; a retry of the batch with the same key answers the leads accepted "
    "before with their original results (`replayed: true`, counted as accepted) and admits the "
    "others, so leads dropped, added or reordered between tries change no other lead's fate. "
    "Without a key, the lead's canonical JSON is its key: a repeat is answered 200 "
    "`duplicate: true` with the original trace id.",
)


def _replayed_header(statuses) -> OpenApiParameter:
    return OpenApiParameter(
        "Idempotent-Replayed",
        {"type": "string", "enum": ["true"]},
        OpenApiParameter.HEADER,
        description="Only on a retry with the same Idempotency-Key whose every lead was "
        "accepted before: the answer is the original one (for a batch, every result replayed).",
        response=statuses,
    )


def _mode_header(statuses, required: bool) -> OpenApiParameter:
    return OpenApiParameter(
        "X-LeadFlow-Mode",
        {"type": "string", "enum": list(MODES)},
        OpenApiParameter.HEADER,
        required=required,
        description="The overload mode the lead was admitted in (README, Overload control).",
        response=statuses,
    )


def _retry_after_header(statuses) -> OpenApiParameter:
    return OpenApiParameter(
        "Retry-After",
        {"type": "integer", "minimum": 1},
        OpenApiParameter.HEADER,
        required=True,
        description="Whole seconds to wait before trying again.",
        response=statuses,
    )


WWW_AUTHENTICATE = OpenApiParameter(
    "WWW-Authenticate",
    {"type": "string"},
    OpenApiParameter.HEADER,
    required=True,
    description='Always `Bearer realm="leadflow"`.',
    response=[401],
)


# --- Examples --------------------------------------------------------------------------------


def _example(name: str, status: int, value: dict) -> OpenApiExample:
    return OpenApiExample(name, value=value, response_only=True, status_codes=[str(status)])


def _read_errors() -> dict:
    """The 429, 431 and 503 every authenticated GET or DELETE can answer (lead status, usage,
    erasure): refused keyless callers, headers too large, a dependency down."""
    return {
        429: OpenApiResponse(
            RateLimited,
            "Too many requests without a valid key from this address.",
            [
                _example(
                    "No key, too often",
                    429,
                    {
                        "error": "rate_limited",
                        "detail": "too many requests without a valid API key from this IP address",
                        "limit": "ip_rate",
                        "retry_after": 1,
                    },
                )
            ],
        ),
        431: _common(0)[431],
        503: OpenApiResponse(
            Error, "PostgreSQL or Redis did not answer.", [_example("Down", 503, UNAVAILABLE)]
        ),
    }


def _common(body_limit: int) -> dict:
    """The answers every POST shares."""
    return {
        401: OpenApiResponse(
            Error,
            "No valid API key.",
            [_example("No key", 401, UNAUTHENTICATED)],
        ),
        413: OpenApiResponse(
            Error,
            f"The body is over {body_limit} bytes.",
            [
                _example(
                    "Too large",
                    413,
                    error(
                        "body_too_large",
                        f"the body is {body_limit + 1} bytes; the limit is {body_limit} bytes",
                    ),
                )
            ],
        ),
        415: OpenApiResponse(
            Error, "Not `application/json`.", [_example("Not JSON", 415, UNSUPPORTED)]
        ),
        431: OpenApiResponse(
            Error,
            "A header over 8,190 bytes, or over 100 headers (gunicorn).",
            [_example("Header too large", 431, HEADER_TOO_LARGE)],
        ),
        503: OpenApiResponse(
            Error,
            "Redis or PostgreSQL did not answer; nothing was accepted (or send the same "
            "request again: an accepted lead is answered with its original answer when sent "
            "with an Idempotency-Key, else as a duplicate).",
            [_example("Redis down", 503, UNAVAILABLE)],
        ),
    }


RATE_LIMITED_DESCRIPTION = (
    "A limit was hit: `ip_rate` (requests without a valid key per address, or the tenant's "
    "per-address limit), `tenant_rate`, `hourly_budget` or `backpressure`."
)


lead_create_schema = extend_schema(
    operation_id="lead_create",
    summary="Send one lead",
    tags=["leads"],
    request=LeadRequest,
    examples=[OpenApiExample("A lead", value=LEAD, request_only=True)],
    parameters=[
        IDEMPOTENCY_KEY,
        _mode_header([202, 200], required=True),
        _mode_header([429], required=False),
        _retry_after_header([429, 503]),
        _replayed_header([202]),
        WWW_AUTHENTICATE,
    ],
    responses={
        202: OpenApiResponse(
            LeadAccepted,
            "Accepted and queued; or, with `Idempotent-Replayed: true`, the original answer to "
            "this Idempotency-Key and lead (its X-LeadFlow-Mode the original's too).",
            [_example("Accepted", 202, ACCEPTED)],
        ),
        200: OpenApiResponse(
            LeadDuplicate,
            "A repeat of a lead accepted in the last 24 h: its original trace id.",
            [_example("Duplicate", 200, DUPLICATE)],
        ),
        400: OpenApiResponse(
            Error,
            "Not JSON, an invalid field (each is named), or a bad Idempotency-Key.",
            [
                _example("Invalid fields", 400, INVALID),
                _example("Not JSON", 400, PARSE_ERROR),
                _example("Bad Idempotency-Key", 400, BAD_KEY),
            ],
        ),
        422: OpenApiResponse(
            Error,
            "This Idempotency-Key was sent before with another lead; nothing was accepted.",
            [_example("Key reused", 422, KEY_REUSED)],
        ),
        429: OpenApiResponse(
            RateLimited, RATE_LIMITED_DESCRIPTION, [_example("Tenant rate", 429, TENANT_RATE)]
        ),
        **_common(settings.LEAD_BODY_MAX_BYTES),
    },
)


batch_create_schema = extend_schema(
    operation_id="leads_batch_create",
    summary="Send 1 to 500 leads",
    tags=["leads"],
    request=BatchRequest,
    examples=[
        OpenApiExample(
            "Two leads",
            value={"leads": [LEAD, {"email": "grace@example.com", "priority": "low"}]},
            request_only=True,
        )
    ],
    parameters=[
        IDEMPOTENCY_KEY,
        _mode_header([202, 200], required=True),
        _mode_header([429], required=False),
        _retry_after_header([429, 503]),
        _replayed_header([202]),
        WWW_AUTHENTICATE,
    ],
    responses={
        202: OpenApiResponse(
            BatchAnswer,
            "At least one lead accepted; one result per lead, in order. On a retry with the "
            "same Idempotency-Key, a lead accepted by an earlier try is answered with its "
            "original result and `replayed: true`, and counted as accepted.",
            [
                _example("Mixed", 202, BATCH_ACCEPTED),
                _example("Retried with the same key", 202, BATCH_REPLAYED),
            ],
        ),
        200: OpenApiResponse(
            BatchAnswer,
            "None accepted, at least one a duplicate.",
            [_example("Duplicates", 200, BATCH_DUPLICATES)],
        ),
        400: OpenApiResponse(
            PolymorphicProxySerializer(
                component_name="BatchRefusal",
                serializers=[BatchAnswer, Error],
                resource_type_field_name=None,
            ),
            "Every lead invalid (the results name each field), or the request itself: not "
            "JSON, no list of 1 to 500 leads, a bad Idempotency-Key.",
            [
                _example("All invalid", 400, BATCH_INVALID),
                _example(
                    "Too many leads",
                    400,
                    error(
                        "batch_too_large",
                        "501 leads; a batch holds at most 500",
                        {"leads": ["at most 500 leads"]},
                    ),
                ),
            ],
        ),
        429: OpenApiResponse(
            PolymorphicProxySerializer(
                component_name="BatchRateLimited",
                serializers=[BatchAnswer, RateLimited],
                resource_type_field_name=None,
            ),
            RATE_LIMITED_DESCRIPTION
            + " A request limit refuses the whole batch; the hourly budget or backpressure "
            "refuse leads, and when every lead was refused the answer is 429.",
            [
                _example("Tenant rate", 429, TENANT_RATE),
                _example("All refused", 429, BATCH_REFUSED),
            ],
        ),
        **_common(settings.BATCH_BODY_MAX_BYTES),
    },
)


lead_retrieve_schema = extend_schema(
    operation_id="lead_retrieve",
    summary="A lead's status",
    tags=["leads"],
    parameters=[
        OpenApiParameter(
            "trace_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="From the POST."
        ),
        _retry_after_header([429, 503]),
        WWW_AUTHENTICATE,
    ],
    responses={
        200: OpenApiResponse(
            PolymorphicProxySerializer(
                component_name="LeadStatus",
                serializers=[LeadQueuedStatus, LeadStoredStatus],
                resource_type_field_name=None,
            ),
            "Queued (its place in the backlog now), or stored (its stages so far).",
            [_example("Queued", 200, QUEUED), _example("Synced", 200, SYNCED)],
        ),
        401: OpenApiResponse(
            Error, "No valid API key.", [_example("No key", 401, UNAUTHENTICATED)]
        ),
        404: OpenApiResponse(
            Error,
            "No lead with this trace id for this tenant (another tenant's lead is not found).",
            [
                _example(
                    "Not found",
                    404,
                    error("not_found", "no lead with this trace id for your tenant"),
                )
            ],
        ),
        **_read_errors(),
    },
)


# --- Postprocessing ----------------------------------------------------------------------------

_CLOSED = {
    "LeadRequest",
    "Error",
    "RateLimited",
    "LeadAccepted",
    "LeadDuplicate",
    "BatchAnswer",
    "LeadQueuedStatus",
    "LeadStoredStatus",
    "QualificationStage",
    "EnrichmentStage",
    "CrmStage",
    "LeadStages",
    "LeadTimestamps",
    "LeadFailure",
    *(serializer.__name__ for serializer in BATCH_RESULTS),
    "LeadsErased",  # apps/intake/erasure_schema.py
    "UsageReceipt",  # apps/intake/usage_schema.py
    "UsageHour",
}
_TRACE_ID_LINKS = {
    "/api/v1/leads": {"202": "$response.body#/trace_id", "200": "$response.body#/trace_id"},
    "/api/v1/leads/batch": {
        "202": "$response.body#/results/0/trace_id",
        "200": "$response.body#/results/0/trace_id",
    },
}


# Every answer carries one, from LeadFlow itself (both the intake's fast path and Django's
# middleware); gunicorn's own 431, sent before either sees the request, does not.
REQUEST_ID_HEADER = {
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
    "required": True,
    "description": "The request's id, in every log line LeadFlow writes for it: the "
    "request's own X-Request-Id when it is 1 to 64 of `A-Za-z0-9._-`, else one made up "
    "(16 hex digits). Quote it when reporting a problem.",
}


def public_paths_only(endpoints, **kwargs):
    """Preprocessing hook: the public API only (/api/v1/); operator endpoints are not in it."""
    return [endpoint for endpoint in endpoints if endpoint[0].startswith("/api/v1/")]


def schema_finish(result, generator, request, public):
    """Postprocessing hook: closed objects, X-Request-Id on every answer, and links from a POST's
    trace id to the GET."""
    for name, component in result.get("components", {}).get("schemas", {}).items():
        if name in _CLOSED and component.get("type") == "object":
            component["additionalProperties"] = False
    for path_item in result["paths"].values():
        for operation in path_item.values():
            for status, response in operation.get("responses", {}).items():
                if status != "431":
                    response.setdefault("headers", {})["X-Request-Id"] = REQUEST_ID_HEADER
    for path, links in _TRACE_ID_LINKS.items():
        responses = result["paths"][path]["post"]["responses"]
        for status, expression in links.items():
            responses[status]["links"] = {
                "GetLeadStatus": {
                    "operationId": "lead_retrieve",
                    "parameters": {"trace_id": expression},
                    "description": "The lead's status, by the trace id the POST answered.",
                }
            }
    return result
