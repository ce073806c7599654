from django.urls import path

from bench.refs.drf_usual.views import LeadBatchView, LeadView

urlpatterns = [
    path("api/v1/leads", LeadView.as_view()),
    path("api/v1/leads/batch", LeadBatchView.as_view()),
]
