from django.urls import path

from apps.intake.api import LeadDetailView
from apps.intake.contract_views import LeadsBatchCreateContractView
from apps.intake.erasure_api import LeadsView
from apps.intake.usage_api import UsageView

# Under gunicorn, POST leads and POST leads/batch never reach Django: apps/intake/fast_post.py
# serves them. The contract views stand where Django would serve them: they are what the schema
# describes, and what tests/intake/test_contract_differential.py holds the hot path to.
urlpatterns = [
    # POST (the contract view) and DELETE ?email=… (erasure: apps/intake/erasure_api.py).
    path("leads", LeadsView.as_view(), name="lead-create"),
    path("leads/batch", LeadsBatchCreateContractView.as_view(), name="leads-batch-create"),
    path("leads/<str:trace_id>", LeadDetailView.as_view(), name="lead-detail"),
    path("usage", UsageView.as_view(), name="usage"),
]
