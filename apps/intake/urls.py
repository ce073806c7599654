from django.urls import path

from apps.intake.api import LeadDetailView

# POST leads and POST leads/batch never reach Django: apps/intake/lean.py serves them.
urlpatterns = [
    path("leads/<str:trace_id>", LeadDetailView.as_view(), name="lead-detail"),
]
