"""What only the operator listener serves of apps/health (apps/health/operator.py)."""

from django.urls import path

from apps.health.api import backlog, readyz_details

urlpatterns = [
    path("readyz", readyz_details, name="readyz-details"),
    path("scaling/backlog", backlog, name="scaling-backlog"),
]
