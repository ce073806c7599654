"""Tenants and API keys in Django admin. A key is shown in clear once, when it is created."""

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import Count, Q

from apps.intake.selectors import admission_state
from apps.tenants.models import ApiKey, Tenant
from apps.tenants.services import api_key_create, api_key_revoke


class ApiKeyInline(admin.TabularInline):
    """Keys are listed, never typed in: a new one comes from the "Create an API key" action."""

    model = ApiKey
    fields = ("prefix", "label", "created_at", "revoked_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

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
        ("CRM", {"fields": ("crm_webhook_url", "crm_webhook_secret")}),
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
    )
    readonly_fields = ("created_at", "critical_credits_now", "budget_used_this_hour")
    inlines = (ApiKeyInline,)
    actions = ("create_api_key",)

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

    @admin.action(description="Create an API key")
    def create_api_key(self, request, queryset) -> None:
        for tenant in queryset:
            with transaction.atomic():
                label = f"admin: {request.user.get_username()}"[:100]
                raw_key = api_key_create(tenant, label=label)
            self.message_user(
                request,
                f"New API key for {tenant.name}: {raw_key} (copy it now: it is stored "
                "hashed and will not be shown again)",
                messages.SUCCESS,
            )


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are created from the tenant list (so the clear key can be shown) and revoked here."""

    list_display = ("prefix", "tenant", "label", "created_at", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter), "tenant")
    search_fields = ("prefix", "label", "tenant__name")
    list_select_related = ("tenant",)
    fields = ("tenant", "prefix", "label", "created_at", "revoked_at")
    readonly_fields = ("tenant", "prefix", "created_at", "revoked_at")
    actions = ("revoke_keys",)

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Revoke selected keys")
    def revoke_keys(self, request, queryset) -> None:
        revoked = 0
        with transaction.atomic():
            for key in queryset.select_for_update().filter(revoked_at__isnull=True):
                api_key_revoke(key)
                revoked += 1
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)
