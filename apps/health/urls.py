from django.urls import path

from apps.health.api import backlog, healthz, readyz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("scaling/backlog", backlog, name="scaling-backlog"),
]
