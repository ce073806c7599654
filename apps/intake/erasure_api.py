"""DELETE /api/v1/leads?email=…: a tenant erases a person's leads (apps/retention/erasure.py).

On the same path as the POST, so in the same view: the POST's contract view (served lean
under gunicorn, apps/intake/lean.py, which hands every other method to Django) with a delete.
"""

from django.conf import settings
from rest_framework.response import Response

from apps.intake.admission import retry_after_seconds
from apps.intake.contract_views import LeadCreateContractView
from apps.intake.erasure_schema import ErasureQuery, LeadsErased, leads_erase_schema
from apps.intake.errors import ApiError, rate_limited
from apps.retention.erasure import leads_erase
from apps.tenants.cache import TenantAuth
from apps.tenants.models import Tenant
from leadflow.ratelimit import bucket_take
from leadflow.redis_keys import erasure_bucket_key

ERASURE_LIMIT = "erasure_rate"


class LeadsView(LeadCreateContractView):
    @leads_erase_schema
    def delete(self, request):
        query = ErasureQuery(data=request.query_params)
        if not query.is_valid():
            raise ApiError(
                400, "invalid", "give the address whose leads to erase: ?email=…", query.errors
            )
        caller: TenantAuth = request.user
        _erasure_take(caller.tenant_id)
        tenant = Tenant.objects.get(pk=caller.tenant_id)
        erasure, counts = leads_erase(
            tenant, query.validated_data["email"], actor=f"api key #{caller.key_id}", via="api"
        )
        return Response(LeadsErased({"email_sha256": erasure.email_sha256, **vars(counts)}).data)


def _erasure_take(tenant_id: int) -> None:
    """A token of the tenant's erasure bucket (LEADFLOW_ERASURE_RATE_PER_SECOND, _BURST); 429
    with the wait as Retry-After when it is empty."""
    answer = bucket_take(
        erasure_bucket_key(tenant_id),
        capacity=settings.ERASURE_BURST,
        refill_per_second=settings.ERASURE_RATE_PER_SECOND,
    )
    if not answer.allowed:
        raise rate_limited(
            ERASURE_LIMIT,
            retry_after_seconds(answer.wait_seconds, ERASURE_LIMIT),
            f"more than {settings.ERASURE_BURST} erasures in a burst, or "
            f"{settings.ERASURE_RATE_PER_SECOND:g} a second, for this tenant",
        )
