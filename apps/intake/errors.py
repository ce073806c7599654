"""One exception type for expected failures and the one handler that turns errors into 4xx JSON,
and a dependency that does not answer (Redis, PostgreSQL) into a 503 with Retry-After.

Every error body has the same shape: {"error": code, "detail": text, "fields": {...}?}.
"""

import logging

import redis
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(
        self,
        status_code: int,
        code: str,
        detail: str,
        fields: dict | None = None,
        *,
        extra: dict | None = None,
        headers: dict | None = None,
    ):
        super().__init__(detail)
        self.status_code = status_code
        self.code = code
        self.detail = detail
        self.fields = fields
        self.extra = extra or {}  # more top-level keys, e.g. the limit a 429 hit
        self.headers = headers or {}
        self.decided = False  # the intake counted this request's leads as decisions (metrics)

    @property
    def body(self) -> dict:
        """The JSON answer: the one error shape, with the extra keys (a 429's limit)."""
        return {**error_body(self.code, self.detail, self.fields), **self.extra}


def rate_limited(limit: str, retry_after: int, detail: str, mode: str | None = None) -> ApiError:
    """429 with an honest Retry-After, naming the limit that was hit."""
    headers = {"Retry-After": str(retry_after)}
    if mode:
        headers["X-LeadFlow-Mode"] = mode
    return ApiError(
        429,
        "rate_limited",
        detail,
        extra={"limit": limit, "retry_after": retry_after},
        headers=headers,
    )


def idempotency_key_reused() -> ApiError:
    """422: an Idempotency-Key sent again with another lead (nothing was admitted)."""
    return ApiError(
        422,
        "idempotency_key_reused",
        "this Idempotency-Key was sent with another lead in the last 24 h; nothing was accepted: "
        "a retry sends the same lead with the same key, a new lead a new key",
    )


# Seconds a client waits before trying again: Redis restarts in about a second (README
# "Outages"); PostgreSQL takes longer.
REDIS_RETRY_AFTER_SECONDS = 1
DATABASE_RETRY_AFTER_SECONDS = 5
# Redis errors that refuse a command for the server's state, not for the command: memory full,
# a script or load running, a replica being promoted, a failed disk write.
_REDIS_REFUSALS = ("OOM", "BUSY", "LOADING", "READONLY", "MISCONF", "MASTERDOWN", "NOREPLICAS")
_REDIS_REFUSAL_CLASSES = (
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.MasterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
)


def outage(error: Exception) -> ApiError | None:
    """The 503 for a dependency that did not answer; None when `error` is not an outage."""
    if isinstance(error, redis.TimeoutError):
        # The command may have run: a repeat of the same lead is answered with its original
        # answer (an Idempotency-Key) or as its duplicate.
        detail = (
            "Redis did not answer in time; send the same request again (the same body and "
            "Idempotency-Key): a lead that was accepted gets its original answer, or is "
            "answered as a duplicate without a key"
        )
    elif isinstance(error, redis.ConnectionError) or (
        isinstance(error, redis.ResponseError) and _redis_refusal(error)
    ):
        detail = "Redis is unavailable; try again shortly (nothing was accepted)"
    elif isinstance(error, OperationalError | InterfaceError):
        return ApiError(
            503,
            "unavailable",
            "the database is unreachable; try again shortly",
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        )
    else:
        return None
    return ApiError(
        503, "unavailable", detail, headers={"Retry-After": str(REDIS_RETRY_AFTER_SECONDS)}
    )


def _redis_refusal(error: redis.ResponseError) -> bool:
    if isinstance(error, _REDIS_REFUSAL_CLASSES):  # redis-py strips the code from these
        return True
    # Inside a script, Redis 6 reports a refused command as "ERR Error running script ...:
    # -OOM command not allowed ..."; other refusals keep their code in front.
    message = str(error)
    return message.startswith(_REDIS_REFUSALS) or any(
        f"-{code} " in message for code in _REDIS_REFUSALS
    )


def error_body(code: str, detail, fields=None) -> dict:
    body = {"error": code, "detail": detail}
    if fields:
        body["fields"] = fields
    return body


def api_exception_handler(exc, context):
    if isinstance(exc, ApiError):
        return Response(exc.body, status=exc.status_code, headers=exc.headers)
    unavailable = outage(exc)
    if unavailable is not None:
        log.warning("API: %s unavailable: %s", type(exc).__module__.split(".")[0], exc)
        return Response(unavailable.body, status=503, headers=unavailable.headers)
    if isinstance(exc, RequestDataTooBig):
        return Response(
            error_body("body_too_large", "the request body is over the limit"),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, Http404):
        return Response(error_body("not_found", "not found"), status=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, exceptions.ValidationError):
        return Response(
            error_body("invalid", "the lead is not valid", exc.detail), status=exc.status_code
        )
    if isinstance(exc, exceptions.APIException):
        headers = {}
        if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
            headers["WWW-Authenticate"] = 'Bearer realm="leadflow"'
        code = exc.get_codes() if isinstance(exc.get_codes(), str) else "error"
        return Response(error_body(code, str(exc.detail)), status=exc.status_code, headers=headers)
    return None  # a real bug: let Django log it and answer 500
