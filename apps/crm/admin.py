"""Operators see what reached the CRM and replay what gave up."""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.crm.dead_letters import dead_letters_replay
from apps.crm.models import CrmSync, DeadLetter


class DeadLetterStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("open", "Open"), ("replayed", "Replayed")]

    def queryset(self, request, queryset):
        if self.value() == "open":
            return queryset.filter(replayed_at__isnull=True)
        if self.value() == "replayed":
            return queryset.filter(replayed_at__isnull=False)
        return queryset


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    list_display = [
        "tenant",
        "lead",
        "stage",
        "error_short",
        "attempts",
        "created_at",
        "replayed_at",
    ]
    list_filter = [DeadLetterStateFilter, "stage", "tenant"]
    list_select_related = ["tenant", "lead"]
    search_fields = ["lead__trace_id", "lead__email", "error"]
    date_hierarchy = "created_at"
    actions = ["replay_selected"]
    readonly_fields = [
        "tenant", "lead", "stage", "error", "attempts", "created_at", "replayed_at",
    ]  # fmt: skip

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="error")
    def error_short(self, obj: DeadLetter) -> str:
        return obj.error if len(obj.error) <= 80 else obj.error[:79] + "…"

    @admin.action(description="Replay selected dead letters")
    def replay_selected(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        count = dead_letters_replay(queryset.values_list("pk", flat=True))
        if count:
            self.message_user(
                request, f"Re-enqueued {count} lead(s) for CRM sync.", messages.SUCCESS
            )
        else:
            self.message_user(
                request,
                "Nothing to replay: the selected dead letters are already replayed.",
                messages.WARNING,
            )


@admin.register(CrmSync)
class CrmSyncAdmin(admin.ModelAdmin):
    list_display = ["lead", "adapter", "reply_status", "reply_cut", "synced_at"]
    list_filter = ["adapter", "lead__tenant"]
    list_select_related = ["lead"]
    search_fields = ["lead__trace_id", "lead__email"]
    date_hierarchy = "synced_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="CRM answered")
    def reply_status(self, obj: CrmSync) -> int | None:
        return obj.response.get("status") if isinstance(obj.response, dict) else None

    @admin.display(description="reply cut", boolean=True)
    def reply_cut(self, obj: CrmSync) -> bool | None:
        # The stored reply is capped (apps/crm/adapters.py reply_stored): say when it was cut.
        return obj.response.get("body_truncated") if isinstance(obj.response, dict) else None

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
