"""Tenants and their API keys. Keys are stored as SHA-256 digests, never in clear."""

import hashlib
import secrets

from django.core.validators import MinValueValidator
from django.db import models

API_KEY_PREFIX = "lf_"


def api_key_digest(raw_key: str) -> str:
    # Keys are 256-bit random tokens, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_key_generate() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


class Tenant(models.Model):
    name = models.CharField(max_length=100, unique=True)
    is_active = models.BooleanField(default=True)
    crm_webhook_url = models.URLField(
        blank=True, help_text="Where pool C posts this tenant's leads; empty = local CRM adapter."
    )
    crm_webhook_secret = models.CharField(
        max_length=200, blank=True, help_text="HMAC-SHA256 key for the webhook signature."
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

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.tenant})"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None
