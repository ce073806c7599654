"""Bearer API keys, checked against the in-process tenant cache (no SQL on a cache hit).

A request without a valid key is limited per IP address (a token bucket in Redis) before it
is told 401, so bots guessing keys are slowed down and cost one Redis call each.
"""

from django.conf import settings
from rest_framework import authentication, exceptions, permissions

from apps.intake.admission import retry_after_seconds
from apps.intake.errors import rate_limited
from apps.intake.inbox import ip_bucket_key
from apps.tenants.cache import TenantAuth, tenant_for_key
from leadflow.logs import bind_log_context
from leadflow.ratelimit import bucket_take


def client_ip(request) -> str:
    """The caller's address: the first X-Forwarded-For hop when a trusted proxy sets it."""
    if settings.TRUST_X_FORWARDED_FOR:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return forwarded.split(",")[0].strip()
    return request.META.get("REMOTE_ADDR", "")


def _anonymous_ip_check(request) -> None:
    answer = bucket_take(
        ip_bucket_key(None, client_ip(request)),
        capacity=settings.ANONYMOUS_IP_BURST,
        refill_per_second=settings.ANONYMOUS_IP_RATE,
    )
    if not answer.allowed:
        raise rate_limited(
            "ip_rate",
            retry_after_seconds(answer.wait_seconds, "ip_rate"),
            "too many requests without a valid API key from this IP address",
        )


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            _anonymous_ip_check(request)
            return None
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            _anonymous_ip_check(request)
            raise exceptions.AuthenticationFailed("use 'Authorization: Bearer <api key>'")
        tenant = tenant_for_key(key.strip())
        if tenant is None:
            _anonymous_ip_check(request)
            raise exceptions.AuthenticationFailed("unknown or revoked API key")
        bind_log_context(tenant=tenant.tenant_id)
        return tenant, key

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="leadflow"'


class IsTenant(permissions.BasePermission):
    message = "an API key is required: 'Authorization: Bearer <api key>'"

    def has_permission(self, request, view) -> bool:
        return isinstance(request.user, TenantAuth)
