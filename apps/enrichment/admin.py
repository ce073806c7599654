"""Enrichments are pool B's record: operators read them here, nobody edits them by hand."""

from django.contrib import admin

from apps.enrichment.models import LeadEnrichment


@admin.register(LeadEnrichment)
class LeadEnrichmentAdmin(admin.ModelAdmin):
    list_display = ("lead", "provider", "degraded", "created_at")
    list_filter = ("provider", "degraded")
    list_select_related = ("lead",)
    search_fields = ("lead__trace_id__exact", "=lead__email")
    date_hierarchy = "created_at"
    readonly_fields = ("lead", "provider", "data", "degraded", "created_at")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
