"""Tenants, their API keys and webhook secrets. Keys are stored as SHA-256 digests, never in
clear (their format: apps/tenants/keys.py); webhook secrets are kept (signing needs them) but
shown in full only when created."""

import base64
import secrets

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from apps.tenants.keys import api_key_digest, api_key_generate
from leadflow.outbound_guard import OutboundPolicy, OutboundRefused, url_check

__all__ = [
    "ApiKey",
    "Tenant",
    "WebhookSecret",
    "api_key_digest",
    "api_key_generate",
    "crm_webhook_url_validate",
    "webhook_secret_generate",
    "webhook_signing_secrets",
]


def crm_webhook_url_validate(url: str) -> None:
    """The SSRF guard's rules at save time: the host is resolved, and every address checked."""
    if not url:
        return
    try:
        url_check(url, OutboundPolicy.current(), resolve="dns")
    except OutboundRefused as refused:
        raise ValidationError(str(refused), code=f"ssrf_{refused.rule}") from None


class Tenant(models.Model):
    name = models.CharField(max_length=100, unique=True)
    is_active = models.BooleanField(default=True)
    crm_webhook_url = models.URLField(
        blank=True,
        validators=[crm_webhook_url_validate],
        help_text="Where pool C posts this tenant's leads (https, a public address, or a host "
        "in LEADFLOW_OUTBOUND_ALLOWED_HOSTS); empty = local CRM adapter.",
    )
    # Admission limits, applied by the intake's one Redis round trip (apps/intake/lua/admit.lua).
    rate_limit_per_second = models.PositiveIntegerField(
        default=1000, help_text="Requests per second (sliding window of 1 s); beyond it 429."
    )
    per_ip_rate_limit_per_second = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Requests per second from one IP address; empty = no per-IP limit.",
    )
    critical_capacity = models.PositiveIntegerField(
        default=100,
        help_text="Critical credits the bucket holds; a critical lead without one is demoted.",
    )
    critical_refill_per_second = models.FloatField(
        default=10.0,
        validators=[MinValueValidator(0.0)],
        help_text="Critical credits added back per second.",
    )
    hourly_budget = models.PositiveIntegerField(
        default=1_000_000,
        help_text="Leads accepted per clock hour (the cost cap); beyond it 429 until it ends.",
    )
    # Retention (apps/retention): how long a finished lead keeps its personal data.
    retention_hours = models.PositiveIntegerField(
        default=48,
        validators=[MinValueValidator(1)],
        help_text="Hours a lead keeps its personal data and payload after it reaches a final "
        "status (synced, failed, duplicate, dead-lettered); then it is anonymized.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ApiKey(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    label = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=12, help_text="First characters, to recognise a key.")
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Refused from this moment on (401 naming the expiry); empty = never.",
    )
    # Written at most once a minute from the requests' own notes (apps/tenants/usage.py).
    last_used_at = models.DateTimeField(
        null=True, blank=True, help_text="Last request with this key, to within a minute or two."
    )

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.tenant})"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def state(self) -> str:
        if self.is_revoked:
            return "revoked"
        return "expired" if self.is_expired else "active"


WEBHOOK_SECRET_PREFIX = "whsec_"
# Active secrets at once: the current one and, during a rotation, the one it replaces.
WEBHOOK_SECRETS_ACTIVE_MAX = 2


def webhook_secret_generate() -> str:
    """A Standard Webhooks secret: "whsec_" + base64 of 32 random bytes."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


class WebhookSecret(models.Model):
    """A key the tenant's webhooks are signed with; each active one signs every delivery."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="webhook_secrets")
    secret = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.tenant})"

    @property
    def prefix(self) -> str:
        """Enough to recognise the secret, too little to sign with."""
        return self.secret[: len(WEBHOOK_SECRET_PREFIX) + 6]

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


def webhook_signing_secrets(tenant: Tenant) -> list[str]:
    """The tenant's active webhook secrets, newest first."""
    return list(
        WebhookSecret.objects.filter(tenant=tenant, revoked_at__isnull=True)
        .order_by("-created_at", "-id")
        .values_list("secret", flat=True)
    )
