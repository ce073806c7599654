"""The intake API: POST one lead or a batch, GET a lead's status. Views validate and shape;
admission (one Redis round trip) decides."""

from django.conf import settings
from rest_framework import status
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.intake import admission
from apps.intake.authentication import ApiKeyAuthentication, IsTenant, client_ip
from apps.intake.errors import ApiError, rate_limited
from apps.intake.serializers import LeadSerializer
from apps.leads.selectors import lead_status
from apps.tenants.cache import TenantAuth
from leadflow.logs import bind_log_context


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


def _lead_body(result: admission.Admission) -> dict:
    if result.duplicate:
        return {"trace_id": result.trace_id, "duplicate": True, "tier": result.tier}
    if result.refusal:
        return {
            "error": "rate_limited",
            "limit": result.refusal.limit,
            "detail": result.refusal.detail,
            "retry_after": result.refusal.retry_after,
        }
    body = {
        "trace_id": result.trace_id,
        "status": "queued",
        "tier": result.tier,
        "demoted": result.demoted,
        "position": result.position,
        "estimated_completion": result.estimated_completion.isoformat(),
    }
    if result.retry_after is not None:
        body["retry_after"] = result.retry_after  # overloaded: poll the status no sooner
    return body


def _admit(request, candidates: list[admission.Candidate]) -> admission.AdmissionResult:
    result = admission.admit(request.user, client_ip(request), candidates)
    if result.refusal:
        raise rate_limited(
            result.refusal.limit, result.refusal.retry_after, result.refusal.detail, result.mode
        )
    return result


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
        admitted = _admit(request, [candidate])
        [result] = admitted.admissions
        bind_log_context(trace_id=result.trace_id)
        if result.refusal:
            refusal = result.refusal
            raise rate_limited(refusal.limit, refusal.retry_after, refusal.detail, admitted.mode)
        code = status.HTTP_200_OK if result.duplicate else status.HTTP_202_ACCEPTED
        return Response(_lead_body(result), status=code, headers={"X-LeadFlow-Mode": admitted.mode})


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
        refusals: list[admission.Refusal] = []
        if candidates:
            admitted = _admit(request, candidates)
            mode = admitted.mode
            for index, result in zip(positions, admitted.admissions, strict=True):
                results[index] = {"index": index, **_lead_body(result)}
                if result.refusal:
                    refusals.append(result.refusal)
        accepted = sum(1 for r in results if r.get("status") == "queued")
        duplicates = sum(1 for r in results if r.get("duplicate"))
        refused = len(refusals)
        invalid = len(leads) - accepted - duplicates - refused
        headers = {"X-LeadFlow-Mode": mode} if mode else {}
        if accepted:
            code = status.HTTP_202_ACCEPTED
        elif duplicates:
            code = status.HTTP_200_OK
        elif refused:
            code = status.HTTP_429_TOO_MANY_REQUESTS
            headers["Retry-After"] = str(min(refusal.retry_after for refusal in refusals))
        else:
            code = status.HTTP_400_BAD_REQUEST
        summary = {
            "accepted": accepted,
            "duplicates": duplicates,
            "refused": refused,
            "invalid": invalid,
        }
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
