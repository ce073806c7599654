"""The intake's hot path: POST /api/v1/leads and POST /api/v1/leads/batch, served as a plain
WSGI application in front of Django (leadflow/wsgi.py); every other request goes to Django.

Why not a DRF view: measured on this path, Django's middleware and DRF's request, parser,
serializer and response machinery cost several times the work itself (README, Performance).
Here a request is: check the host, authenticate from the in-process tenant cache, read and
decode the body (orjson), validate (apps/intake/validation.py), admit in one Redis round trip
(apps/intake/admission.py), answer. The rules, answers and errors are the API's own: one
JSON error shape, 401/413/415/400/422/429 as the README says, X-LeadFlow-Mode on every admission,
X-Request-Id on every answer (the caller's, if sane, else a new one; in every log line too),
and 503 with Retry-After when Redis or PostgreSQL does not answer (apps/intake/errors.py
`outage`), never a 500. The only database use here, the tenant cache's load on a miss, does
Django's connection housekeeping itself (apps/tenants/cache.py).
"""

import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime

import orjson
import structlog
from django.conf import settings
from django.http.request import split_domain_port, validate_host

from apps.intake import admission
from apps.intake.authentication import client_ip, tenant_authenticate
from apps.intake.errors import ApiError, idempotency_key_reused, outage, rate_limited
from apps.intake.json_body import body_decode
from apps.intake.validation import lead_validate
from leadflow.logs import REQUEST_ID_HEADER, request_id_for
from leadflow.metrics import intake_decisions_count, intake_errors_count
from leadflow.queues import TIERS

log = logging.getLogger(__name__)

_STATUS_LINES = {
    200: "200 OK",
    202: "202 Accepted",
    400: "400 Bad Request",
    401: "401 Unauthorized",
    404: "404 Not Found",
    413: "413 Request Entity Too Large",
    415: "415 Unsupported Media Type",
    422: "422 Unprocessable Entity",
    431: "431 Request Header Fields Too Large",
    429: "429 Too Many Requests",
    500: "500 Internal Server Error",
    503: "503 Service Unavailable",
}


class Answer:
    __slots__ = ("status", "body", "headers")

    def __init__(self, status: int, body: dict, headers: dict | None = None):
        self.status, self.body, self.headers = status, body, headers or {}


def _json_body(environ: dict, max_bytes: int) -> tuple[object, bool]:
    """The body's JSON and whether its leads need the deep checks (json_body.body_decode)."""
    content_type = environ.get("CONTENT_TYPE", "")
    if (
        content_type != "application/json"  # as clients send it: no parsing
        and content_type.split(";", 1)[0].strip().lower() != "application/json"
    ):
        raise ApiError(
            415,
            "unsupported_media_type",
            "send the lead as JSON with 'Content-Type: application/json'",
        )
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise ApiError(400, "invalid", "Content-Length is not a number") from None
    if length > max_bytes:
        raise ApiError(
            413, "body_too_large", f"the body is {length} bytes; the limit is {max_bytes} bytes"
        )
    # Without a Content-Length (chunked), read one byte past the limit to see it is passed.
    raw = environ["wsgi.input"].read(length if length else max_bytes + 1)
    if len(raw) > max_bytes:
        raise ApiError(413, "body_too_large", f"the body is over the limit of {max_bytes} bytes")
    return body_decode(raw)


# Idempotency-Key: as Stripe's, at most 255 characters; printable ASCII, because a WSGI server
# hands header bytes over as Latin-1, and the same key must give the same digest everywhere.
IDEMPOTENCY_KEY_MAX_LENGTH = 255
_IDEMPOTENCY_KEY = re.compile(rf"[ -~]{{1,{IDEMPOTENCY_KEY_MAX_LENGTH}}}")


def _idempotency_key(environ: dict) -> str | None:
    key = environ.get("HTTP_IDEMPOTENCY_KEY")
    if not key:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        reason = (
            f"has {len(key)} characters; the limit is {IDEMPOTENCY_KEY_MAX_LENGTH}"
            if len(key) > IDEMPOTENCY_KEY_MAX_LENGTH
            else "holds characters other than printable ASCII"
        )
        raise ApiError(
            400,
            "invalid_header",
            f"the Idempotency-Key header must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable "
            "ASCII characters",
            {"Idempotency-Key": [reason]},
        )
    return key


def _lead_body(result: admission.Admission) -> dict:
    if result.duplicate:
        return {"trace_id": result.trace_id, "duplicate": True, "tier": result.tier}
    if result.refusal:
        return {
            "error": "rate_limited",
            "limit": result.refusal.limit,
            "detail": result.refusal.detail,
            "retry_after": result.refusal.retry_after,
        }
    body = {
        "trace_id": result.trace_id,
        "status": "queued",
        "tier": result.tier,
        "demoted": result.demoted,
        "position": result.position,
        "estimated_completion": result.estimated_completion,  # _answer_json writes it
    }
    if result.retry_after is not None:
        body["retry_after"] = result.retry_after  # overloaded: poll the status no sooner
    return body


def _batch_lead_body(index: int, result: admission.Admission) -> dict:
    """A batch's lead's answer: its index, then _lead_body's; the usual one built in one go."""
    if result.duplicate or result.refusal or result.retry_after is not None:
        return {"index": index, **_lead_body(result)}
    return {
        "index": index,
        "trace_id": result.trace_id,
        "status": "queued",
        "tier": result.tier,
        "demoted": result.demoted,
        "position": result.position,
        "estimated_completion": result.estimated_completion,
    }


def _candidate(
    lead: dict, raw: dict, idempotency_key: str | None, in_batch: bool
) -> admission.Candidate:
    digest, fingerprint = admission.dedup_identity(raw, idempotency_key, in_batch)
    tier = lead.pop("priority")
    return admission.Candidate(digest, tier, lead, fingerprint)


def _admit(tenant, ip: str, candidates: list) -> admission.AdmissionResult:
    result = admission.admit(tenant, ip, candidates)
    if result.refusal:
        refusal = result.refusal
        decisions = Counter((c.tier, "rate_limited", refusal.limit) for c in candidates)
        _decisions_count(tenant.tenant_id, decisions)
        raise _decided(
            rate_limited(refusal.limit, refusal.retry_after, refusal.detail, result.mode)
        )
    _decisions_count(tenant.tenant_id, _decisions(result.admissions))
    return result


def _decided(error: ApiError) -> ApiError:
    """The error of a request whose leads were counted as decisions already."""
    error.decided = True
    return error


def _decisions(results: list[admission.Admission]) -> dict[tuple[str, str, str], int]:
    """How many leads were decided each way: (tier, outcome, reason), as the intake's decision
    metric counts a lead."""
    counts: dict[tuple[str, str, str], int] = {}
    for result in results:
        if result.refusal:
            decision = (result.tier, "rate_limited", result.refusal.limit)
        elif result.key_reused:
            decision = (result.tier, "invalid", "idempotency_key_reused")
        elif result.duplicate or result.replayed:  # a replay was counted when it was accepted
            decision = (result.tier, "duplicate", "")
        else:
            decision = (result.tier, "demoted" if result.demoted else "accepted", "")
        counts[decision] = counts.get(decision, 0) + 1
    return counts


def _decisions_count(tenant_id: int, decisions: dict) -> None:
    for (tier, outcome, reason), n in decisions.items():
        intake_decisions_count(tenant_id, tier, outcome, n, reason)


def _invalid_tier(raw) -> str:
    priority = raw.get("priority") if isinstance(raw, dict) else None
    return priority if priority in TIERS else "normal"


def lead_create(environ: dict) -> Answer:
    ip = client_ip(environ)
    tenant = tenant_authenticate(environ.get("HTTP_AUTHORIZATION", ""), ip)
    idempotency_key = _idempotency_key(environ)
    raw, deep = _json_body(environ, settings.LEAD_BODY_MAX_BYTES)
    lead, errors = lead_validate(raw, deep)
    if errors:
        intake_decisions_count(tenant.tenant_id, _invalid_tier(raw), "invalid", reason="invalid")
        raise _decided(ApiError(400, "invalid", "the lead is not valid", errors))
    candidate = _candidate(lead, raw, idempotency_key, in_batch=False)
    admitted = _admit(tenant, ip, [candidate])
    [result] = admitted.admissions
    if result.refusal:
        refusal = result.refusal
        raise _decided(
            rate_limited(refusal.limit, refusal.retry_after, refusal.detail, admitted.mode)
        )
    if result.key_reused:
        raise _decided(idempotency_key_reused())
    structlog.contextvars.bind_contextvars(trace_id=result.trace_id)
    if result.replayed:  # the original answer: its body, and the mode it was admitted in
        headers = {"X-LeadFlow-Mode": result.mode, "Idempotent-Replayed": "true"}
    else:
        headers = {"X-LeadFlow-Mode": admitted.mode}
    return Answer(200 if result.duplicate else 202, _lead_body(result), headers)


def leads_batch_create(environ: dict) -> Answer:
    # Long on purpose: the batch's checks in the order the contract answers them
    # (tests/intake/test_contract_differential.py holds both paths to the same order).
    ip = client_ip(environ)
    tenant = tenant_authenticate(environ.get("HTTP_AUTHORIZATION", ""), ip)
    idempotency_key = _idempotency_key(environ)
    body, deep = _json_body(environ, settings.BATCH_BODY_MAX_BYTES)
    leads = body.get("leads") if isinstance(body, dict) else None
    if not isinstance(leads, list) or not leads:
        raise ApiError(
            400,
            "invalid",
            'send {"leads": [...]} with 1 to 500 leads',
            {"leads": ["must be a non-empty list"]},
        )
    if len(leads) > settings.BATCH_MAX_LEADS:
        raise ApiError(
            400,
            "batch_too_large",
            f"{len(leads)} leads; a batch holds at most {settings.BATCH_MAX_LEADS}",
            {"leads": [f"at most {settings.BATCH_MAX_LEADS} leads"]},
        )
    results: list[dict | None] = [None] * len(leads)
    candidates, positions = [], []
    invalid: Counter = Counter()
    payload_max_bytes = settings.LEAD_PAYLOAD_MAX_BYTES  # read once, not once a lead
    dedup_identity, candidate_new = admission.dedup_identity, admission.Candidate
    for index, raw in enumerate(leads):
        lead, errors = lead_validate(raw, deep, payload_max_bytes)
        if errors:
            results[index] = {"index": index, "error": "invalid", "fields": errors}
            invalid[(_invalid_tier(raw), "invalid", "invalid")] += 1
            continue
        # _candidate, inline: a call less a lead.
        digest, fingerprint = dedup_identity(raw, idempotency_key, True)
        candidates.append(candidate_new(digest, lead.pop("priority"), lead, fingerprint))
        positions.append(index)

    _decisions_count(tenant.tenant_id, invalid)
    headers: dict[str, str] = {}
    accepted = duplicates = replayed = 0
    retry_afters = []
    if candidates:
        admitted = _admit(tenant, ip, candidates)
        headers["X-LeadFlow-Mode"] = admitted.mode
        for index, result in zip(positions, admitted.admissions, strict=True):
            body = results[index] = _batch_lead_body(index, result)
            if result.refusal:
                retry_afters.append(result.refusal.retry_after)
            elif result.duplicate:
                duplicates += 1
            else:
                accepted += 1
                if result.replayed:  # accepted by an earlier try of this batch (its key)
                    body["replayed"] = True
                    replayed += 1
    if replayed == len(leads):
        headers["Idempotent-Replayed"] = "true"
    refused = len(retry_afters)
    if accepted:
        status = 202
    elif duplicates:
        status = 200
    elif refused:
        status = 429
        headers["Retry-After"] = str(min(retry_afters))
    else:
        status = 400
    summary = {
        "accepted": accepted,
        "duplicates": duplicates,
        "refused": refused,
        "invalid": len(leads) - accepted - duplicates - refused,
    }
    return Answer(status, {**summary, "results": results}, headers)


ROUTES: dict[str, Callable[[dict], Answer]] = {
    "/api/v1/leads": lead_create,
    "/api/v1/leads/batch": leads_batch_create,
}


class FastPostIntake:
    """WSGI: the intake's POSTs here, everything else to `django_app`."""

    def __init__(self, django_app: Callable) -> None:
        self.django_app = django_app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        handler = ROUTES.get(environ.get("PATH_INFO", ""))
        if handler is None or environ.get("REQUEST_METHOD") != "POST":
            return self.django_app(environ, start_response)
        structlog.contextvars.clear_contextvars()
        request_id = request_id_for(environ.get("HTTP_X_REQUEST_ID"))
        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            _host_check(environ)
            answer = handler(environ)
        except ApiError as exc:
            answer = Answer(exc.status_code, exc.body, exc.headers)
            if not exc.decided and exc.status_code < 500:  # refused before any decision
                intake_errors_count(exc.status_code, exc.code)
        except Exception as exc:  # noqa: BLE001 - every request gets a JSON answer
            unavailable = outage(exc)
            if unavailable is None:
                log.exception("intake: unexpected error")
                answer = Answer(500, {"error": "server_error", "detail": "an unexpected error"})
            else:
                # One line, not a traceback: an outage repeats it for every request.
                log.warning("intake: answered 503, %s: %s", type(exc).__name__, exc)
                answer = Answer(503, unavailable.body, unavailable.headers)
        payload = _answer_json(answer.body)
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            (REQUEST_ID_HEADER, request_id),
            *answer.headers.items(),
        ]
        start_response(_STATUS_LINES[answer.status], headers)
        return [payload]


def _answer_json(body: dict) -> bytes:
    """The answer's JSON. A lead's estimated_completion is left a datetime for orjson, which
    writes what datetime.isoformat() does (RFC 3339, "+00:00") at a tenth of its cost."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        # An error naming a field or value that holds a lone surrogate (the lenient reading of
        # json_body): the standard library writes it as a \u escape, as the client sent it.
        return json.dumps(body, default=_isoformat).encode()


def _isoformat(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


_hosts_seen: dict[str, bool] = {}


def _host_check(environ: dict) -> None:
    """Django's ALLOWED_HOSTS check, which this path does not get from Django (remembered per
    Host header: a client sends the same one every time)."""
    host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
    allowed = _hosts_seen.get(host)
    if allowed is None:
        domain, _port = split_domain_port(host)
        allowed = bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)
        if len(_hosts_seen) > 1000:  # bounded: made-up Host headers cannot grow it
            _hosts_seen.clear()
        _hosts_seen[host] = allowed
    if not allowed:
        raise ApiError(400, "bad_host", f"host {host!r} is not served here")
