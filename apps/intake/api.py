"""The intake API's reads, in DRF: GET a lead's status. The POSTs are the hot path, served
fast path outside Django's request cycle (apps/intake/fast_post.py); their DRF contract is
apps/intake/contract_views.py. The answer's shapes are apps/intake/contract.py's LeadQueuedStatus
and LeadStoredStatus (the schema, apps/intake/schema.py)."""

from rest_framework.response import Response
from rest_framework.views import APIView

from apps.intake import admission
from apps.intake.authentication import ApiKeyAuthentication, IsTenant
from apps.intake.errors import ApiError
from apps.intake.schema import lead_retrieve_schema
from apps.leads.selectors import lead_status
from apps.tenants.cache import TenantAuth


class LeadDetailView(APIView):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [IsTenant]

    @lead_retrieve_schema
    def get(self, request, trace_id):
        tenant: TenantAuth = request.user
        found = lead_status(tenant.tenant_id, trace_id)
        if found is None:
            found = _queued_status(tenant.tenant_id, trace_id)
        if found is None:
            raise ApiError(404, "not_found", "no lead with this trace id for your tenant")
        return Response(found)


def _queued_status(tenant_id: int, trace_id: str) -> dict | None:
    """A lead admitted but not yet written by pool A is known only to Redis."""
    queued = admission.queued_lead(trace_id)
    if queued is None or queued.tenant_id != tenant_id:
        return None
    return {
        "trace_id": trace_id,
        "status": "queued",
        "tier": queued.tier,
        "position": queued.position,
        "estimated_completion": queued.estimated_completion.isoformat(),
        "received_at": queued.received_at.isoformat(),
    }
