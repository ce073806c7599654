"""The audit of retention runs and erasures, read-only: rows are written by the job and by
erasure requests (the API's DELETE /api/v1/leads?email=…, the tenants' admin action), never
typed in, changed or deleted here."""

from django.contrib import admin
from django.http import HttpRequest

from apps.retention.models import Erasure, RetentionRun


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # an audit that can be edited audits nothing


@admin.register(RetentionRun)
class RetentionRunAdmin(_ReadOnly):
    list_display = (
        "started_at", "finished_at", "leads", "batches", "redis_keys", "deferred_closed",
        "complete",
    )  # fmt: skip
    list_filter = ("complete",)
    date_hierarchy = "started_at"
    fields = (*list_display, "by_tenant")
    readonly_fields = fields


@admin.register(Erasure)
class ErasureAdmin(_ReadOnly):
    list_display = ("at", "tenant_name", "email_sha256", "actor", "leads")
    list_filter = ("tenant",)
    # An operator finds a person's erasures by the hash of the address (README "Retention").
    search_fields = ("=email_sha256", "tenant_name")
    date_hierarchy = "at"
    fields = ("at", "tenant", "tenant_name", "email_sha256", "actor", "leads", "counts")
    readonly_fields = fields
