"""The audit of retention runs and erasures, read-only: rows are written by the job and by
erasure requests (the API's DELETE /api/v1/leads?email=…, the tenants' admin action below),
never typed in, changed or deleted here."""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.validators import validate_email
from django.http import HttpRequest
from django.template.response import TemplateResponse

from apps.intake.validation import EMAIL_MAX_LENGTH
from apps.retention.erasure import leads_erase
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


class ErasureForm(forms.Form):
    email = forms.CharField(
        max_length=EMAIL_MAX_LENGTH,
        validators=[validate_email],
        help_text="As the person gave it: case and outer spaces do not matter.",
    )


@admin.action(description="Erase a person's leads (by e-mail address)…")
def erase_person(modeladmin, request: HttpRequest, queryset):
    """The tenants' admin action: asks for the address, then erases it for each tenant."""
    form = ErasureForm(request.POST if "apply" in request.POST else None)
    if form.is_valid():
        actor = f"admin {request.user.get_username()}"
        for tenant in queryset:
            erasure, counts = leads_erase(tenant, form.cleaned_data["email"], actor, via="admin")
            modeladmin.message_user(
                request,
                f"{tenant.name}: {counts.leads} lead(s) erased, {counts.redis_keys} Redis key(s) "
                f"(audit: erasure {erasure.email_sha256[:12]}…).",
                messages.SUCCESS,
            )
        return None  # back to the list
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": "Erase a person's leads",
        "opts": modeladmin.model._meta,
        "form": form,
        "tenants": queryset,
        "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
    }
    return TemplateResponse(request, "retention/erase_person.html", context)
