"""Writes to tenants, keys and webhook secrets. Each change to a tenant or key tells every
process to drop its cached copy (signals), except the keys' last-used times, which change
nothing a key may do."""

from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from apps.tenants.keys import DISPLAY_PREFIX_LENGTH, api_key_well_formed
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


def api_key_create(tenant: Tenant, label: str = "", expires_at: datetime | None = None) -> str:
    """Create a key for the tenant and return it in clear; it is not stored that way."""
    if expires_at is not None and expires_at <= timezone.now():
        raise TenantError(f"the expiry {expires_at:%Y-%m-%d %H:%M:%S %Z} is already past")
    raw_key = api_key_generate()
    ApiKey.objects.create(
        tenant=tenant,
        label=label,
        prefix=raw_key[:DISPLAY_PREFIX_LENGTH],
        digest=api_key_digest(raw_key),
        expires_at=expires_at,
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
def api_key_rotate(
    key: ApiKey, overlap: timedelta, expires_at: datetime | None = None
) -> tuple[ApiKey, str]:
    """A new key for the same tenant and label (expiring at `expires_at`, or never), and the old
    one expiring after `overlap` (at once for 0) unless it expires sooner: both work meanwhile,
    so clients move to the new key without a moment refused. Returns (new key, its clear)."""
    if overlap < timedelta(0):
        raise TenantError("the overlap cannot be negative")
    key = ApiKey.objects.select_for_update().get(pk=key.pk)
    if key.is_revoked:
        raise TenantError(f"key {key.prefix}… is revoked: create a new one instead")
    raw_key = api_key_create(key.tenant, label=key.label, expires_at=expires_at)
    old_expiry = timezone.now() + overlap
    if key.expires_at is None or key.expires_at > old_expiry:
        key.expires_at = old_expiry
        key.save(update_fields=["expires_at"])
    return ApiKey.objects.get(digest=api_key_digest(raw_key)), raw_key


def api_key_find(reference: str) -> ApiKey:
    """The key named by its id, by its prefix as listed (or the start of it), or in whole."""
    reference = reference.strip().rstrip("…")
    keys = ApiKey.objects.select_related("tenant")
    if reference.isdigit():
        matches = list(keys.filter(pk=int(reference)))
    elif api_key_well_formed(reference):
        matches = list(keys.filter(digest=api_key_digest(reference)))
    elif len(reference) >= 6:
        matches = list(keys.filter(prefix__startswith=reference))
    else:
        raise TenantError("name a key by its id, or by its prefix as listed (lf_live_…)")
    if not matches:
        raise TenantError(f"no API key matches {reference!r}")
    if len(matches) > 1:
        ids = ", ".join(str(key.pk) for key in matches)
        raise TenantError(f"{len(matches)} keys start with {reference!r}: name one by id ({ids})")
    return matches[0]


def api_keys_last_used_record(times: dict[int, float]) -> int:
    """Each key's last_used_at moved forward to its time (epoch seconds), in one UPDATE that
    sends no signal (the tenant caches stay). Returns how many rows moved."""
    if not times:
        return 0
    table = ApiKey._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        # Bookkeeping never waits long behind a transaction holding these rows (an admin's).
        cursor.execute("SET LOCAL lock_timeout = '2s'")
        cursor.execute(
            f"""
            UPDATE {table} AS k SET last_used_at = v.at
            FROM unnest(%s::bigint[], %s::double precision[]) AS u(id, epoch),
                 LATERAL (SELECT to_timestamp(u.epoch) AS at) AS v
            WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < v.at)
            """,
            [list(times), list(times.values())],
        )
        return cursor.rowcount


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
