"""Every URL, as the operator listener serves them; the public listener serves only
`public_urlpatterns` (leadflow/public_urls.py, chosen per request by apps/health/operator.py)."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from apps.status.page import status_view

# The operators' live status page, inside the admin (staff only), linked from its home page.
admin.site.index_template = "control/admin_index.html"

# The public listener: the API, its schema and docs, and the probes (/healthz, /readyz: no key).
public_urlpatterns = [
    path("api/v1/", include("apps.intake.urls")),
    # The public API's OpenAPI schema and its docs (drf-spectacular; the UIs' files are served
    # from drf-spectacular-sidecar's static files, no CDN).
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path(
        "api/redoc/",
        SpectacularRedocView.as_view(url_name="api-schema", template_name="intake/redoc.html"),
        name="api-redoc",
    ),
    path("", include("apps.health.urls")),
]

# The operator listener adds the admin, the metrics, the scaling figures and the probes' details
# (ahead of the public /readyz, which it answers with each check's error).
urlpatterns = [
    path("admin/status/", admin.site.admin_view(status_view), name="control-status"),
    path("admin/", admin.site.urls),
    path("", include("apps.health.operator_urls")),
    path("", include("django_prometheus.urls")),
    *public_urlpatterns,
]

# Outside the API's views too, answers in its JSON error shape (the admin keeps its HTML).
handler400 = "apps.health.error_views.bad_request"
handler403 = "apps.health.error_views.forbidden"
handler404 = "apps.health.error_views.not_found"
handler500 = "apps.health.error_views.server_error"
