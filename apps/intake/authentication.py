"""Bearer API keys, checked against the in-process tenant cache (no SQL on a cache hit).

What a request costs before it is known to carry a valid key, cheapest first:
- no key, or one that is not a LeadFlow key at all (apps/tenants/keys.py: prefix and
  checksum): refused on the string alone, then counted against the per-IP limit of requests
  without a valid key (one Redis call);
- a key this process knows is unknown (the cache remembers it a few seconds): the same;
- a key this process has not seen lately: the per-IP limit first, then the database. A key that
  turns out valid gives its token back, so tenants' cache misses do not eat into it.
So a flood of unknown keys costs Redis calls, and SQL only for well-formed keys within the
per-IP limit (README "Security").
"""

import ipaddress
import time

from django.conf import settings
from rest_framework import authentication, permissions

from apps.intake.admission import retry_after_seconds
from apps.intake.errors import DATABASE_RETRY_AFTER_SECONDS, ApiError, rate_limited
from apps.tenants import usage
from apps.tenants.cache import TenantAuth, TenantsUnavailable, tenant_for_key
from apps.tenants.keys import api_key_well_formed
from leadflow.logs import bind_log_context
from leadflow.ratelimit import bucket_take
from leadflow.redis_keys import ip_bucket_key

WWW_AUTHENTICATE = 'Bearer realm="leadflow"'


def client_ip(meta: dict) -> str:
    """The caller's address (from a WSGI environ or Django's request.META): with
    LEADFLOW_TRUSTED_PROXIES=n, the nth X-Forwarded-For entry from the right, the one the
    outermost of our proxies wrote; entries left of it are whatever the client sent. A request
    with fewer entries did not come through all the proxies: its TCP peer is used."""
    proxies = settings.TRUSTED_PROXIES
    if proxies:
        hops = meta.get("HTTP_X_FORWARDED_FOR", "").split(",")
        if len(hops) >= proxies:
            hop = hops[-proxies].strip()
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                pass  # not an address: a proxy that writes something else is misconfigured
    return meta.get("REMOTE_ADDR", "")


def _ip_take(ip: str, cost: int = 1) -> ApiError | None:
    """A token of this address's bucket for requests without a valid key; the 429 if empty."""
    answer = bucket_take(
        ip_bucket_key(None, ip),
        capacity=settings.ANONYMOUS_IP_BURST,
        refill_per_second=settings.ANONYMOUS_IP_RATE,
        cost=cost,
    )
    if answer.allowed:
        return None
    return rate_limited(
        "ip_rate",
        retry_after_seconds(answer.wait_seconds, "ip_rate"),
        "too many requests without a valid API key from this IP address",
    )


def _refused(code: str, detail: str) -> ApiError:
    return ApiError(401, code, detail, headers={"WWW-Authenticate": WWW_AUTHENTICATE})


def _unauthenticated(ip: str, code: str, detail: str) -> ApiError:
    """401, or 429 when this address has sent too many requests without a valid key."""
    return _ip_take(ip) or _refused(code, detail)


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
    if not api_key_well_formed(key):
        raise _unauthenticated(
            ip,
            "authentication_failed",
            "not a LeadFlow API key (they look like lf_live_… and carry a checksum): check it "
            "was copied whole",
        )
    charged = False

    def ip_limit_before_database() -> None:
        nonlocal charged
        refusal = _ip_take(ip)
        if refusal is not None:
            raise refusal
        charged = True

    try:
        tenant = tenant_for_key(key, before_database=ip_limit_before_database)
    except TenantsUnavailable:
        if charged:
            _ip_take(ip, cost=-1)  # not the caller's fault: the token goes back
        raise ApiError(
            503,
            "unavailable",
            "this API key cannot be checked while the database is unreachable; try again "
            "shortly (nothing was accepted)",
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        ) from None
    if tenant is None or tenant.key_expired(time.time()):
        detail = (
            "unknown or revoked API key"
            if tenant is None
            else f"this API key expired at {_iso(tenant.key_expires_at)}: use its "
            "replacement, or ask for a new one"
        )
        # The lookup already took this address's token; else take one now.
        raise (
            _refused("authentication_failed", detail)
            if charged
            else _unauthenticated(ip, "authentication_failed", detail)
        )
    if charged:
        _ip_take(ip, cost=-1)  # a valid key: its lookup's token goes back
    usage.key_used(tenant.key_id)
    bind_log_context(tenant=tenant.tenant_id)
    return tenant


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


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
