"""The operators' controls: the overload policy (one page), the audit of every decision, and
the deferred ledger."""

from django.contrib import admin
from django.shortcuts import redirect
from django.urls import reverse

from apps.control.models import ControlEvent, DeferredWork, Policy


@admin.register(Policy)
class PolicyAdmin(admin.ModelAdmin):
    """One row, edited in place. The controller reads it every tick (within 1 s), publishes
    the result, and every process follows within 2 s. Each save is audited with its user."""

    fieldsets = (
        ("Mode", {"fields": ("forced_mode", "pause_low", "sampling_percent")}),
        (
            "Shed features (in the order an emergency sheds them)",
            {"fields": ("throttle_crm", "pause_enrichment", "reports_off", "analytics_off")},
        ),
        ("Scaling", {"fields": ("stop_scaling",)}),
        ("Last change", {"fields": ("updated_by", "updated_at")}),
    )
    readonly_fields = ("updated_by", "updated_at")

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def changelist_view(self, request, extra_context=None):
        policy = Policy.current()
        return redirect(reverse("admin:control_policy_change", args=[policy.pk]))

    def save_model(self, request, obj, form, change) -> None:
        obj.updated_by = request.user.get_username()
        super().save_model(request, obj, form, change)
        if form.changed_data:
            changes = ", ".join(f"{name}={form.cleaned_data[name]!r}" for name in form.changed_data)
            ControlEvent.objects.create(
                kind=ControlEvent.Kind.OVERRIDE,
                actor=obj.updated_by,
                reason=f"policy changed: {changes}",
            )


@admin.register(ControlEvent)
class ControlEventAdmin(admin.ModelAdmin):
    list_display = ("at", "kind", "from_mode", "to_mode", "actor", "reason")
    list_filter = ("kind", "to_mode", "actor")
    readonly_fields = ("at", "kind", "from_mode", "to_mode", "actor", "reason", "measures")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(DeferredWork)
class DeferredWorkAdmin(admin.ModelAdmin):
    list_display = (
        "kind",
        "reason",
        "tenant",
        "lead_id",
        "period_start",
        "mode",
        "created_at",
        "done_at",
    )
    list_filter = ("kind", "reason", ("done_at", admin.EmptyFieldListFilter), "mode", "tenant")
    list_select_related = ("tenant",)
    readonly_fields = (
        "kind",
        "reason",
        "tenant",
        "lead",
        "period_start",
        "mode",
        "created_at",
        "sent_at",
        "done_at",
    )

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
