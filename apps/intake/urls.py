from django.urls import path

from apps.intake.api import LeadBatchCreateView, LeadCreateView, LeadDetailView

urlpatterns = [
    path("leads", LeadCreateView.as_view(), name="lead-create"),
    path("leads/batch", LeadBatchCreateView.as_view(), name="lead-batch-create"),
    path("leads/<str:trace_id>", LeadDetailView.as_view(), name="lead-detail"),
]
