import hashlib
import json
import uuid

import redis
from django.conf import settings
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from bench.refs.drf_usual.auth import Tenant
from bench.refs.drf_usual.tasks import QUEUE, process_lead

_redis = redis.Redis.from_url(settings.REDIS_URL)
DEDUP_SECONDS = 24 * 3600


class LeadSerializer(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    phone = serializers.CharField(max_length=40, required=False, allow_blank=True)
    company = serializers.CharField(max_length=200, required=False, allow_blank=True)
    source = serializers.CharField(max_length=100, required=False, allow_blank=True)
    campaign_id = serializers.CharField(max_length=100, required=False, allow_blank=True)
    region = serializers.CharField(max_length=50, required=False, allow_blank=True)
    priority = serializers.ChoiceField(choices=["critical", "normal", "low"], default="normal")
    payload = serializers.JSONField(required=False)


def _dedup_key(tenant: Tenant, lead: dict) -> str:
    canonical = json.dumps(lead, sort_keys=True, separators=(",", ":")).encode()
    return f"bench:usual:dedup:{tenant.id}:{hashlib.sha256(canonical).hexdigest()}"


class LeadView(APIView):
    def post(self, request):
        serializer = LeadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if settings.BENCH_DRF_VARIANT == "serializer":
            return Response({"status": "queued"}, status=status.HTTP_202_ACCEPTED)
        trace_id = str(uuid.uuid4())
        key = _dedup_key(request.user, request.data)
        if not _redis.set(key, trace_id, nx=True, ex=DEDUP_SECONDS):
            original = _redis.get(key)
            return Response({"trace_id": original and original.decode(), "duplicate": True})
        lead = {**serializer.validated_data, "trace_id": trace_id}
        process_lead.apply_async(args=[lead], queue=QUEUE)
        return Response({"trace_id": trace_id, "status": "queued"}, status=202)


class LeadBatchView(APIView):
    def post(self, request):
        leads = request.data.get("leads") if isinstance(request.data, dict) else None
        if not isinstance(leads, list) or not 1 <= len(leads) <= 500:
            raise exceptions.ValidationError({"leads": ["1 to 500 leads"]})
        serializer = LeadSerializer(data=leads, many=True)
        serializer.is_valid(raise_exception=True)
        if settings.BENCH_DRF_VARIANT == "serializer":
            return Response({"accepted": len(leads)}, status=status.HTTP_202_ACCEPTED)
        trace_ids = [str(uuid.uuid4()) for _ in leads]
        pipe = _redis.pipeline(transaction=False)
        for raw, trace_id in zip(leads, trace_ids, strict=True):
            pipe.set(_dedup_key(request.user, raw), trace_id, nx=True, ex=DEDUP_SECONDS)
        fresh = pipe.execute()
        results = []
        for lead, trace_id, new in zip(serializer.validated_data, trace_ids, fresh, strict=True):
            if new:
                process_lead.apply_async(args=[{**lead, "trace_id": trace_id}], queue=QUEUE)
            results.append({"trace_id": trace_id, "duplicate": not new})
        accepted = sum(1 for new in fresh if new)
        body = {"accepted": accepted, "duplicates": len(leads) - accepted, "results": results}
        return Response(body, status=202 if accepted else 200)
