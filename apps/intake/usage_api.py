"""GET /api/v1/usage?from=…&to=…: the tenant's own overload receipt, per hour
(apps/usage/receipt.py; README "Receipt")."""

from dataclasses import asdict

from rest_framework.response import Response
from rest_framework.views import APIView

from apps.intake.authentication import ApiKeyAuthentication, IsTenant
from apps.intake.errors import ApiError
from apps.intake.usage_schema import (
    BAD_RANGE,
    UsageQuery,
    UsageReceipt,
    usage_retrieve_schema,
)
from apps.tenants.cache import TenantAuth
from apps.usage.receipt import tenant_receipt


class UsageView(APIView):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [IsTenant]

    @usage_retrieve_schema
    def get(self, request):
        query = UsageQuery(data=request.query_params)
        if not query.is_valid():
            raise ApiError(400, "invalid", BAD_RANGE, query.errors)
        start, end = query.validated_data["from"], query.validated_data["to"]
        tenant: TenantAuth = request.user
        hours = tenant_receipt(tenant.tenant_id, start, end)
        answer = {"from": start, "to": end, "hours": [asdict(hour) for hour in hours]}
        return Response(UsageReceipt(answer).data)
