"""The intake API: POST one lead or a batch, GET a lead's status. Views validate and shape;
admission (one Redis round trip) decides."""

from datetime import UTC, datetime

from django.conf import settings
from rest_framework import status
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.intake import admission
from apps.intake.authentication import ApiKeyAuthentication, IsTenant
from apps.intake.errors import ApiError
from apps.intake.serializers import LeadSerializer
from apps.leads.selectors import lead_status
from apps.tenants.cache import TenantAuth


def _require_json_body(request, max_bytes: int) -> object:
    content_type = request.content_type.split(";")[0].strip().lower()
    if content_type != "application/json":
        raise ApiError(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the lead as JSON with 'Content-Type: application/json'",
        )
    length = int(request.META.get("CONTENT_LENGTH") or 0)
    if length > max_bytes:
        raise ApiError(
            status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            "body_too_large",
            f"the body is {length} bytes; the limit is {max_bytes} bytes",
        )
    return request.data


def _accepted_body(result: admission.Admission) -> dict:
    if result.duplicate:
        return {"trace_id": result.trace_id, "duplicate": True, "tier": result.tier}
    return {
        "trace_id": result.trace_id,
        "status": "queued",
        "tier": result.tier,
        "position": result.position,
        "estimated_completion": result.estimated_completion.isoformat(),
    }


def _candidate(lead: dict, raw: object, idempotency_key: str | None) -> admission.Candidate:
    digest = (
        admission.dedup_digest_for_key(idempotency_key)
        if idempotency_key
        else admission.dedup_digest_for_body(raw)
    )
    tier = lead.pop("priority")
    return admission.Candidate(dedup_digest=digest, tier=tier, fields=lead)


class IntakeView(APIView):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [IsTenant]
    parser_classes = [JSONParser]


class LeadCreateView(IntakeView):
    def post(self, request):
        body = _require_json_body(request, settings.LEAD_BODY_MAX_BYTES)
        serializer = LeadSerializer(data=body)
        serializer.is_valid(raise_exception=True)
        candidate = _candidate(
            dict(serializer.validated_data), body, request.headers.get("Idempotency-Key")
        )
        mode, [result] = admission.admit(request.user.tenant_id, [candidate])
        code = status.HTTP_200_OK if result.duplicate else status.HTTP_202_ACCEPTED
        return Response(_accepted_body(result), status=code, headers={"X-LeadFlow-Mode": mode})


class LeadBatchCreateView(IntakeView):
    def post(self, request):
        body = _require_json_body(request, settings.BATCH_BODY_MAX_BYTES)
        leads = body.get("leads") if isinstance(body, dict) else None
        if not isinstance(leads, list) or not leads:
            raise ApiError(
                400,
                "invalid",
                'send {"leads": [...]} with 1 to 500 leads',
                {"leads": ["must be a non-empty list"]},
            )
        if len(leads) > settings.BATCH_MAX_LEADS:
            raise ApiError(
                400,
                "batch_too_large",
                f"{len(leads)} leads; a batch holds at most {settings.BATCH_MAX_LEADS}",
                {"leads": [f"at most {settings.BATCH_MAX_LEADS} leads"]},
            )
        idempotency_key = request.headers.get("Idempotency-Key")
        results: list[dict | None] = [None] * len(leads)
        candidates, positions = [], []
        for index, raw in enumerate(leads):
            serializer = LeadSerializer(data=raw)
            if not serializer.is_valid():
                results[index] = {"index": index, "error": "invalid", "fields": serializer.errors}
                continue
            key = f"{idempotency_key}:{index}" if idempotency_key else None
            candidates.append(_candidate(dict(serializer.validated_data), raw, key))
            positions.append(index)
        mode = None
        if candidates:
            mode, admissions = admission.admit(request.user.tenant_id, candidates)
            for index, result in zip(positions, admissions, strict=True):
                results[index] = {"index": index, **_accepted_body(result)}
        accepted = sum(1 for r in results if r.get("status") == "queued")
        duplicates = sum(1 for r in results if r.get("duplicate"))
        invalid = len(leads) - accepted - duplicates
        if accepted:
            code = status.HTTP_202_ACCEPTED
        elif duplicates:
            code = status.HTTP_200_OK
        else:
            code = status.HTTP_400_BAD_REQUEST
        headers = {"X-LeadFlow-Mode": mode} if mode else {}
        summary = {"accepted": accepted, "duplicates": duplicates, "invalid": invalid}
        return Response({**summary, "results": results}, status=code, headers=headers)


class LeadDetailView(IntakeView):
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
    if queued is None or queued[0] != tenant_id:
        return None
    _, tier, received_at = queued
    return {
        "trace_id": trace_id,
        "status": "queued",
        "tier": tier,
        "received_at": datetime.fromtimestamp(received_at, tz=UTC).isoformat(),
    }
