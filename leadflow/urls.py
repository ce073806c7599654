from django.contrib import admin
from django.urls import include, path

from apps.control.status import status_view

# The operators' live status page, inside the admin (staff only), linked from its home page.
admin.site.index_template = "control/admin_index.html"

urlpatterns = [
    path("admin/status/", admin.site.admin_view(status_view), name="control-status"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("apps.intake.urls")),
    # /healthz, /readyz, /scaling/backlog: no API key (probes and KEDA call them).
    path("", include("apps.health.urls")),
    path("", include("django_prometheus.urls")),
]
