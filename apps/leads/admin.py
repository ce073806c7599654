"""The quarantine: operators read why each failed lead failed, and replay them after a fix."""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.leads.models import FailedLead
from apps.leads.quarantine import failed_leads_replay


@admin.register(FailedLead)
class FailedLeadAdmin(admin.ModelAdmin):
    list_display = ("trace_id", "tenant", "failed_stage", "reason_short", "failed_at", "tier")
    list_filter = ("failed_stage", "tenant")
    list_select_related = ("tenant",)
    search_fields = ("=trace_id", "=email", "failed_reason")
    date_hierarchy = "failed_at"
    ordering = ("-failed_at",)
    actions = ["replay_selected"]
    fields = (
        "trace_id", "tenant", "tier", "failed_stage", "failed_reason", "failed_at",
        "failed_entry", "email", "name", "company", "received_at",
    )  # fmt: skip
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # a failed lead is accounted for until replayed; deleting would lose it

    @admin.display(description="reason")
    def reason_short(self, obj: FailedLead) -> str:
        reason = obj.failed_reason
        return reason if len(reason) <= 100 else reason[:99] + "…"

    @admin.action(description="Replay selected failed leads (after fixing their cause)")
    def replay_selected(self, request: HttpRequest, queryset: QuerySet[FailedLead]) -> None:
        count = failed_leads_replay([str(pk) for pk in queryset.values_list("pk", flat=True)])
        if count:
            self.message_user(
                request,
                f"Sent {count} lead(s) through their failed stage again; one that fails again "
                "comes back here with the new reason.",
                messages.SUCCESS,
            )
        else:
            self.message_user(request, "Nothing to replay.", messages.WARNING)
