"""One exception type for expected failures and the one handler that turns errors into 4xx JSON.

Every error body has the same shape: {"error": code, "detail": text, "fields": {...}?}.
"""

from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response


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
        return {**_body(self.code, self.detail, self.fields), **self.extra}


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


def _body(code: str, detail, fields=None) -> dict:
    body = {"error": code, "detail": detail}
    if fields:
        body["fields"] = fields
    return body


def api_exception_handler(exc, context):
    if isinstance(exc, ApiError):
        return Response(exc.body, status=exc.status_code, headers=exc.headers)
    if isinstance(exc, RequestDataTooBig):
        return Response(
            _body("body_too_large", "the request body is over the limit"),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, Http404):
        return Response(_body("not_found", "not found"), status=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, exceptions.ValidationError):
        return Response(
            _body("invalid", "the lead is not valid", exc.detail), status=exc.status_code
        )
    if isinstance(exc, exceptions.APIException):
        headers = {}
        if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
            headers["WWW-Authenticate"] = 'Bearer realm="leadflow"'
        code = exc.get_codes() if isinstance(exc.get_codes(), str) else "error"
        return Response(_body(code, str(exc.detail)), status=exc.status_code, headers=headers)
    return None  # a real bug: let Django log it and answer 500
