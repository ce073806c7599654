from django.contrib import admin

from apps.reports.models import Report


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):
    list_display = ("tenant", "kind", "period_start", "period_end", "built_at")
    list_filter = ("kind", "tenant")
    readonly_fields = ("tenant", "kind", "period_start", "period_end", "data", "built_at")

    def has_add_permission(self, request) -> bool:
        return False
