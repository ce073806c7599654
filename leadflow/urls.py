from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("apps.intake.urls")),
    # /healthz, /readyz, /scaling/backlog: no API key (probes and KEDA call them).
    path("", include("apps.health.urls")),
    path("", include("django_prometheus.urls")),
]
