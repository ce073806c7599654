"""Bearer API keys, checked against the in-process tenant cache (no SQL on a cache hit)."""

from rest_framework import authentication, exceptions, permissions

from apps.tenants.cache import TenantAuth, tenant_for_key


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise exceptions.AuthenticationFailed("use 'Authorization: Bearer <api key>'")
        tenant = tenant_for_key(key.strip())
        if tenant is None:
            raise exceptions.AuthenticationFailed("unknown or revoked API key")
        return tenant, key

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="leadflow"'


class IsTenant(permissions.BasePermission):
    message = "an API key is required: 'Authorization: Bearer <api key>'"

    def has_permission(self, request, view) -> bool:
        return isinstance(request.user, TenantAuth)
