from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from apps.control.status import status_view

# The operators' live status page, inside the admin (staff only), linked from its home page.
admin.site.index_template = "control/admin_index.html"

urlpatterns = [
    path("admin/status/", admin.site.admin_view(status_view), name="control-status"),
    path("admin/", admin.site.urls),
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
    # /healthz, /readyz, /scaling/backlog: no API key (probes and KEDA call them).
    path("", include("apps.health.urls")),
    path("", include("django_prometheus.urls")),
]
