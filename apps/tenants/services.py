"""Writes to tenants, keys and webhook secrets. Each change to a tenant or key tells every
process to drop its cached copy."""

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from apps.tenants.models import (
    WEBHOOK_SECRETS_ACTIVE_MAX,
    ApiKey,
    Tenant,
    WebhookSecret,
    api_key_digest,
    api_key_generate,
    crm_webhook_url_validate,
    webhook_secret_generate,
)


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
    try:
        crm_webhook_url_validate(fields.get("crm_webhook_url", ""))
    except ValidationError as exc:
        raise TenantError(f"crm_webhook_url: {exc.messages[0]}") from None
    tenant = Tenant.objects.create(name=name, **fields)
    WebhookSecret.objects.create(tenant=tenant, secret=webhook_secret_generate())
    return tenant, api_key_create(tenant, label="initial")


def api_key_revoke(key: ApiKey) -> None:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])


@transaction.atomic
def webhook_secret_create(tenant: Tenant) -> str:
    """A new webhook secret for the tenant, returned in clear to be shown once. Both it and the
    current one sign every delivery until the older is revoked (the rotation's overlap)."""
    Tenant.objects.select_for_update().filter(pk=tenant.pk).first()  # one rotation at a time
    active = WebhookSecret.objects.filter(tenant=tenant, revoked_at__isnull=True).count()
    if active >= WEBHOOK_SECRETS_ACTIVE_MAX:
        raise TenantError(
            f"tenant {tenant.name!r} already has {active} active webhook secrets: revoke the "
            "older one first (its receivers must have moved to the newer)"
        )
    secret = webhook_secret_generate()
    WebhookSecret.objects.create(tenant=tenant, secret=secret)
    return secret


@transaction.atomic
def webhook_secret_revoke(secret: WebhookSecret) -> None:
    """Stop signing with this secret; refused for the tenant's last active one (mandatory)."""
    Tenant.objects.select_for_update().filter(pk=secret.tenant_id).first()
    secret.refresh_from_db(fields=["revoked_at"])
    if secret.revoked_at is not None:
        return
    others = WebhookSecret.objects.filter(tenant_id=secret.tenant_id, revoked_at__isnull=True)
    if not others.exclude(pk=secret.pk).exists():
        raise TenantError(
            f"{secret.prefix}… is the tenant's only active webhook secret: create the new one "
            "first, then revoke this one"
        )
    secret.revoked_at = timezone.now()
    secret.save(update_fields=["revoked_at"])


def webhook_secret_revoke_older(tenant: Tenant) -> WebhookSecret:
    """Revoke the older of the tenant's two active secrets (the rotation's last step)."""
    oldest = (
        WebhookSecret.objects.filter(tenant=tenant, revoked_at__isnull=True)
        .order_by("created_at", "id")
        .first()
    )
    if oldest is None:
        raise TenantError(f"tenant {tenant.name!r} has no active webhook secret")
    webhook_secret_revoke(oldest)
    return oldest
