"""DELETE /api/v1/leads?email=…: a tenant erases a person's leads (apps/retention/erasure.py).

On the same path as the POST, so in the same view: the POST's contract view (served lean
under gunicorn, apps/intake/lean.py, which hands every other method to Django) with a delete.
"""

from rest_framework.response import Response

from apps.intake.contract_views import LeadCreateContractView
from apps.intake.erasure_schema import ErasureQuery, LeadsErased, leads_erase_schema
from apps.intake.errors import ApiError
from apps.retention.erasure import leads_erase
from apps.tenants.cache import TenantAuth
from apps.tenants.models import Tenant


class LeadsView(LeadCreateContractView):
    @leads_erase_schema
    def delete(self, request):
        query = ErasureQuery(data=request.query_params)
        if not query.is_valid():
            raise ApiError(
                400, "invalid", "give the address whose leads to erase: ?email=…", query.errors
            )
        caller: TenantAuth = request.user
        tenant = Tenant.objects.get(pk=caller.tenant_id)
        erasure, counts = leads_erase(
            tenant, query.validated_data["email"], actor=f"api key #{caller.key_id}", via="api"
        )
        return Response(LeadsErased({"email_sha256": erasure.email_sha256, **vars(counts)}).data)
