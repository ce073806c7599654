"""Writes to tenants and keys. Each change tells every process to drop its cached copy."""

from django.db import transaction
from django.utils import timezone

from apps.tenants.models import ApiKey, Tenant, api_key_digest, api_key_generate


class TenantError(ValueError):
    pass


def api_key_create(tenant: Tenant, label: str = "") -> str:
    """Create a key for the tenant and return it in clear; it is not stored that way."""
    raw_key = api_key_generate()
    ApiKey.objects.create(
        tenant=tenant, label=label, prefix=raw_key[:10], digest=api_key_digest(raw_key)
    )
    return raw_key


@transaction.atomic
def tenant_create(name: str, **fields) -> tuple[Tenant, str]:
    name = name.strip()
    if not name:
        raise TenantError("a tenant needs a name")
    if Tenant.objects.filter(name=name).exists():
        raise TenantError(f"a tenant named {name!r} already exists")
    tenant = Tenant.objects.create(name=name, **fields)
    return tenant, api_key_create(tenant, label="initial")


def api_key_revoke(key: ApiKey) -> None:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
