"""Tenants, API keys and webhook secrets in Django admin. A key or a secret is shown in clear
once, when it is created (a key also when rotated); afterwards only its first characters. A
key's expiry and label can be changed, nothing else."""

from datetime import timedelta

from django.contrib import admin, messages
from django.db import models, transaction
from django.db.models import Count, Q

from apps.intake.selectors import admission_state
from apps.retention.admin import erase_person
from apps.tenants.models import ApiKey, Tenant, WebhookSecret
from apps.tenants.services import (
    TenantError,
    api_key_create,
    api_key_revoke,
    api_key_rotate,
    webhook_secret_create,
    webhook_secret_revoke_older,
)

SECRET_SHOWN_ONCE = (
    "copy it now, it will not be shown again; receivers verify with it (README: Webhooks)"
)
# How long a rotated key keeps working next to its replacement (the admin action's; the
# command's --overlap chooses another).
ROTATION_OVERLAP = timedelta(hours=24)


def _shown_once(request, what: str, raw_key: str) -> None:
    messages.success(
        request, f"{what}: {raw_key} (copy it now: it is stored hashed and will not be shown again)"
    )


class ApiKeyInline(admin.TabularInline):
    """Keys are listed, never typed in: a new one comes from the "Create an API key" action."""

    model = ApiKey
    fields = ("prefix", "label", "state", "created_at", "last_used_at", "expires_at", "revoked_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="state")
    def state(self, key: ApiKey) -> str:
        return key.state


class WebhookSecretInline(admin.TabularInline):
    """Secrets are listed by their first characters, never in full; they are created and
    revoked by the tenant actions (a tenant always keeps one active). Not an admin page of
    their own: its delete would let the last one go."""

    model = WebhookSecret
    fields = ("prefix", "created_at", "revoked_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name = "webhook secret"

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "is_active",
        "active_key_count",
        "rate_limit_per_second",
        "critical_capacity",
        "critical_credits_now",
        "hourly_budget",
        "budget_used_this_hour",
    )
    list_filter = ("is_active",)
    search_fields = ("name",)
    fieldsets = (
        (None, {"fields": ("name", "is_active", "created_at")}),
        ("CRM", {"fields": ("crm_webhook_url",)}),
        (
            "Admission limits (applied within 30 s, at once on save)",
            {
                "fields": (
                    "rate_limit_per_second",
                    "per_ip_rate_limit_per_second",
                    ("critical_capacity", "critical_refill_per_second", "critical_credits_now"),
                    ("hourly_budget", "budget_used_this_hour"),
                )
            },
        ),
        ("Retention (README: Retention)", {"fields": ("retention_hours",)}),
    )
    readonly_fields = ("created_at", "critical_credits_now", "budget_used_this_hour")
    # A URL typed without a scheme is taken as https, the one scheme allowed outside dev.
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    inlines = (ApiKeyInline, WebhookSecretInline)
    actions = (
        "create_api_key",
        "create_webhook_secret",
        "revoke_older_webhook_secret",
        erase_person,  # apps/retention/admin.py
    )

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                _active_key_count=Count("api_keys", filter=Q(api_keys__revoked_at__isnull=True))
            )
        )

    @admin.display(description="active keys", ordering="_active_key_count")
    def active_key_count(self, tenant: Tenant) -> int:
        return tenant._active_key_count

    @admin.display(description="critical credits now")
    def critical_credits_now(self, tenant: Tenant) -> str:
        if tenant.pk is None:
            return "-"
        return f"{admission_state(tenant).critical_credits:.0f} of {tenant.critical_capacity}"

    @admin.display(description="budget used this hour")
    def budget_used_this_hour(self, tenant: Tenant) -> str:
        if tenant.pk is None:
            return "-"
        return f"{admission_state(tenant).budget_used} of {tenant.hourly_budget}"

    def save_model(self, request, obj: Tenant, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if not change:  # a tenant always has a webhook secret (README: Webhooks)
            secret = webhook_secret_create(obj)
            self.message_user(
                request,
                f"Webhook secret of {obj.name}: {secret} ({SECRET_SHOWN_ONCE})",
                messages.SUCCESS,
            )

    @admin.action(description="Create a webhook secret (both sign until the older is revoked)")
    def create_webhook_secret(self, request, queryset) -> None:
        for tenant in queryset:
            try:
                secret = webhook_secret_create(tenant)
            except TenantError as exc:
                self.message_user(request, str(exc), messages.ERROR)
                continue
            self.message_user(
                request,
                f"New webhook secret for {tenant.name}: {secret} ({SECRET_SHOWN_ONCE}). "
                "Deliveries are signed with it and the older one until that is revoked.",
                messages.SUCCESS,
            )

    @admin.action(description="Revoke the older webhook secret (end a rotation)")
    def revoke_older_webhook_secret(self, request, queryset) -> None:
        for tenant in queryset:
            try:
                revoked = webhook_secret_revoke_older(tenant)
            except TenantError as exc:
                self.message_user(request, str(exc), messages.ERROR)
                continue
            self.message_user(
                request, f"Revoked webhook secret {revoked.prefix}… of {tenant.name}."
            )

    @admin.action(description="Create an API key")
    def create_api_key(self, request, queryset) -> None:
        for tenant in queryset:
            with transaction.atomic():
                label = f"admin: {request.user.get_username()}"[:100]
                raw_key = api_key_create(tenant, label=label)
            _shown_once(request, f"New API key for {tenant.name}", raw_key)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are created from the tenant list (so the clear key can be shown), rotated and revoked
    here; an expiry can be set or cleared on a key's page."""

    list_display = (
        "prefix",
        "tenant",
        "label",
        "state",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    )
    list_filter = (
        ("revoked_at", admin.EmptyFieldListFilter),
        ("expires_at", admin.EmptyFieldListFilter),
        "tenant",
    )
    search_fields = ("prefix", "label", "tenant__name")
    list_select_related = ("tenant",)
    fields = (
        "tenant",
        "prefix",
        "label",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    )
    readonly_fields = ("tenant", "prefix", "created_at", "last_used_at", "revoked_at")
    actions = ("rotate_keys", "revoke_keys")

    def has_add_permission(self, request) -> bool:
        return False

    @admin.display(description="state")
    def state(self, key: ApiKey) -> str:
        return key.state

    @admin.action(description="Rotate: a new key now, the selected ones expire in 24 hours")
    def rotate_keys(self, request, queryset) -> None:
        for key in queryset.select_related("tenant"):
            try:
                _, raw_key = api_key_rotate(key, ROTATION_OVERLAP)
            except TenantError as error:
                self.message_user(request, str(error), messages.WARNING)
                continue
            _shown_once(
                request,
                f"Replacement for {key.prefix}… of {key.tenant.name} (the old key works for "
                "24 more hours; revoke it sooner once clients use the new one)",
                raw_key,
            )

    @admin.action(description="Revoke selected keys")
    def revoke_keys(self, request, queryset) -> None:
        revoked = 0
        with transaction.atomic():
            for key in queryset.select_for_update().filter(revoked_at__isnull=True):
                api_key_revoke(key)
                revoked += 1
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)
