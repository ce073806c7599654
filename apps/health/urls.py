"""The probes, on the public listener: no API key, nothing an outsider could use."""

from django.urls import path

from apps.health.api import healthz, readyz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
]
