"""Bearer API keys, checked against the in-process tenant cache (no SQL on a cache hit).

A request without a valid key is limited per IP address (a token bucket in Redis) before it
is told 401, so bots guessing keys are slowed down and cost one Redis call each.
"""

from django.conf import settings
from rest_framework import authentication, permissions

from apps.intake.admission import retry_after_seconds
from apps.intake.errors import DATABASE_RETRY_AFTER_SECONDS, ApiError, rate_limited
from apps.intake.inbox import ip_bucket_key
from apps.tenants.cache import TenantAuth, TenantsUnavailable, tenant_for_key
from leadflow.logs import bind_log_context
from leadflow.ratelimit import bucket_take

WWW_AUTHENTICATE = 'Bearer realm="leadflow"'


def client_ip(meta: dict) -> str:
    """The caller's address (from a WSGI environ or Django's request.META): the first
    X-Forwarded-For hop when a trusted proxy sets it."""
    if settings.TRUST_X_FORWARDED_FOR:
        forwarded = meta.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return forwarded.split(",")[0].strip()
    return meta.get("REMOTE_ADDR", "")


def _unauthenticated(ip: str, code: str, detail: str) -> ApiError:
    """401, or 429 when this address has sent too many requests without a valid key."""
    answer = bucket_take(
        ip_bucket_key(None, ip),
        capacity=settings.ANONYMOUS_IP_BURST,
        refill_per_second=settings.ANONYMOUS_IP_RATE,
    )
    if not answer.allowed:
        return rate_limited(
            "ip_rate",
            retry_after_seconds(answer.wait_seconds, "ip_rate"),
            "too many requests without a valid API key from this IP address",
        )
    return ApiError(401, code, detail, headers={"WWW-Authenticate": WWW_AUTHENTICATE})


def tenant_authenticate(authorization: str, ip: str) -> TenantAuth:
    """The tenant owning the Bearer key in the Authorization header; ApiError otherwise."""
    if not authorization:
        raise _unauthenticated(
            ip, "not_authenticated", "an API key is required: 'Authorization: Bearer <api key>'"
        )
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise _unauthenticated(ip, "authentication_failed", "use 'Authorization: Bearer <api key>'")
    try:
        tenant = tenant_for_key(key)
    except TenantsUnavailable:
        raise ApiError(
            503,
            "unavailable",
            "this API key cannot be checked while the database is unreachable; try again "
            "shortly (nothing was accepted)",
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        ) from None
    if tenant is None:
        raise _unauthenticated(ip, "authentication_failed", "unknown or revoked API key")
    bind_log_context(tenant=tenant.tenant_id)
    return tenant


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """The same check for the DRF views (the lead status GET)."""

    def authenticate(self, request):
        tenant = tenant_authenticate(
            request.META.get("HTTP_AUTHORIZATION", ""), client_ip(request.META)
        )
        return tenant, None

    def authenticate_header(self, request) -> str:
        return WWW_AUTHENTICATE


class IsTenant(permissions.BasePermission):
    message = "an API key is required: 'Authorization: Bearer <api key>'"

    def has_permission(self, request, view) -> bool:
        return isinstance(request.user, TenantAuth)
