"""The two intake POSTs as DRF views: the contract (apps/intake/contract.py) run as code.

These views are what the OpenAPI schema describes, and a complete implementation of the API:
they authenticate, read, validate and admit a lead exactly as the hot path does. They are
mounted where Django would serve POST /api/v1/leads and /api/v1/leads/batch, but under
gunicorn those requests never reach Django: leadflow/wsgi.py hands them to apps/intake/fast_post.py
first. So these views cost the hot path nothing; they exist to be described (drf-spectacular)
and to be compared with the hot path (tests/intake/test_contract_differential.py), and they
serve the POSTs under any server that runs Django without the fast-path wrapper. They do not count
the intake's metrics (fast_post.py does, on the path that is served).

Where DRF's defaults differ from the API (its empty-body shortcut, media-type wildcards, the
Accept header, its messages), the classes here state the API's rule instead.
"""

import io
import json
import re

import orjson
from django.conf import settings
from rest_framework import serializers
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.intake import admission
from apps.intake.authentication import ApiKeyAuthentication, IsTenant, client_ip
from apps.intake.contract import (
    BatchAnswer,
    BatchLeadAccepted,
    BatchLeadDuplicate,
    BatchLeadInvalid,
    BatchLeadRefused,
    BatchRequest,
    LeadAccepted,
    LeadDuplicate,
    LeadRequest,
)
from apps.intake.errors import ApiError, idempotency_key_reused, rate_limited
from apps.intake.json_body import body_decode
from apps.intake.schema import batch_create_schema, lead_create_schema

IDEMPOTENCY_KEY_MAX_LENGTH = 255
_PRINTABLE_ASCII = re.compile(rf"[ -~]{{1,{IDEMPOTENCY_KEY_MAX_LENGTH}}}")


class IntakeJSONRenderer(JSONRenderer):
    """Compact JSON; an error naming a lone surrogate (which UTF-8 cannot carry) is written
    with \\u escapes, as the client sent it, where DRF's renderer would raise."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        try:
            return orjson.dumps(data)
        except orjson.JSONEncodeError:
            return json.dumps(data).encode()


class IntakeNegotiation(BaseContentNegotiation):
    """The answer is JSON whatever Accept says; the body must be `application/json` exactly
    (parameters such as charset ignored, no wildcards), else 415."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type

    def select_parser(self, request, parsers):
        media_type = request.content_type.split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            raise ApiError(
                415,
                "unsupported_media_type",
                "send the lead as JSON with 'Content-Type: application/json'",
            )
        return parsers[0]


class IntakeJSONParser(BaseParser):
    """The body as JSON (apps/intake/json_body.py), within the view's size limit (413)."""

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        max_bytes = parser_context["view"].body_max_bytes()
        try:
            length = int(parser_context["request"].META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise ApiError(400, "invalid", "Content-Length is not a number") from None
        if length > max_bytes:
            raise ApiError(
                413, "body_too_large", f"the body is {length} bytes; the limit is {max_bytes} bytes"
            )
        raw = stream.read(length if length else max_bytes + 1)
        if len(raw) > max_bytes:
            raise ApiError(
                413, "body_too_large", f"the body is over the limit of {max_bytes} bytes"
            )
        value, _deep = body_decode(raw)
        return value


def idempotency_key(meta: dict) -> str | None:
    """The Idempotency-Key header: 1 to 255 printable ASCII characters (kept 24 h a tenant)."""
    key = meta.get("HTTP_IDEMPOTENCY_KEY")
    if not key:
        return None
    if not _PRINTABLE_ASCII.fullmatch(key):
        reason = (
            f"has {len(key)} characters; the limit is {IDEMPOTENCY_KEY_MAX_LENGTH}"
            if len(key) > IDEMPOTENCY_KEY_MAX_LENGTH
            else "holds characters other than printable ASCII"
        )
        raise ApiError(
            400,
            "invalid_header",
            f"the Idempotency-Key header must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable "
            "ASCII characters",
            {"Idempotency-Key": [reason]},
        )
    return key


def _candidate(lead: dict, raw: dict, key: str | None, in_batch: bool) -> admission.Candidate:
    """Dedup by the Idempotency-Key when given (for a batch's lead, key + lead), else by the
    lead as sent (canonical JSON): admission.dedup_identity."""
    fields = dict(lead)
    digest, fingerprint = admission.dedup_identity(raw, key, in_batch)
    return admission.Candidate(digest, fields.pop("priority"), fields, fingerprint)


def _accepted(result: admission.Admission) -> dict:
    answer = {
        "trace_id": result.trace_id,
        "status": "queued",
        "tier": result.tier,
        "demoted": result.demoted,
        "position": result.position,
        "estimated_completion": result.estimated_completion.isoformat(),
    }
    if result.retry_after is not None:
        answer["retry_after"] = result.retry_after
    return answer


def _refused(refusal: admission.Refusal) -> dict:
    return {
        "error": "rate_limited",
        "limit": refusal.limit,
        "detail": refusal.detail,
        "retry_after": refusal.retry_after,
    }


def _refusal_raise(refusal: admission.Refusal, mode: str):
    raise rate_limited(refusal.limit, refusal.retry_after, refusal.detail, mode)


class _IntakeContractView(APIView):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [IsTenant]
    parser_classes = [IntakeJSONParser]
    renderer_classes = [IntakeJSONRenderer]
    content_negotiation_class = IntakeNegotiation

    def body_max_bytes(self) -> int:
        raise NotImplementedError

    def body(self, request):
        """The JSON body. DRF reads an empty body as {} without looking at its media type;
        the API reads it as JSON like any other (415, or 400 parse_error)."""
        if request.stream is None:
            parser = request.negotiator.select_parser(request, request.parsers)
            return parser.parse(io.BytesIO(b""), None, {"view": self, "request": request})
        return request.data


class LeadCreateContractView(_IntakeContractView):
    def body_max_bytes(self) -> int:
        return settings.LEAD_BODY_MAX_BYTES

    @lead_create_schema
    def post(self, request):
        key = idempotency_key(request.META)
        raw = self.body(request)
        lead = LeadRequest(data=raw)
        if not lead.is_valid():
            raise ApiError(400, "invalid", "the lead is not valid", lead.errors)
        candidate = _candidate(lead.validated_data, raw, key, in_batch=False)
        admitted = admission.admit(request.user, client_ip(request.META), [candidate])
        if admitted.refusal:
            _refusal_raise(admitted.refusal, admitted.mode)
        [result] = admitted.admissions
        if result.refusal:
            _refusal_raise(result.refusal, admitted.mode)
        if result.key_reused:
            raise idempotency_key_reused()
        if result.replayed:  # the original answer: its body, and the mode it was admitted in
            headers = {"X-LeadFlow-Mode": result.mode, "Idempotent-Replayed": "true"}
        else:
            headers = {"X-LeadFlow-Mode": admitted.mode}
        if result.duplicate:
            return Response(LeadDuplicate(result).data, status=200, headers=headers)
        return Response(LeadAccepted(_accepted(result)).data, status=202, headers=headers)


class LeadsBatchCreateContractView(_IntakeContractView):
    def body_max_bytes(self) -> int:
        return settings.BATCH_BODY_MAX_BYTES

    @batch_create_schema
    def post(self, request):
        key = idempotency_key(request.META)
        body = self.body(request)
        batch = BatchRequest(data=body if isinstance(body, dict) else {})
        if not batch.is_valid():
            [reason] = batch.errors["leads"]
            if reason.code == "max_length":
                raise ApiError(
                    400,
                    "batch_too_large",
                    f"{len(body['leads'])} leads; a batch holds at most {settings.BATCH_MAX_LEADS}",
                    {"leads": [reason]},
                )
            raise ApiError(
                400,
                "invalid",
                f'send {{"leads": [...]}} with 1 to {settings.BATCH_MAX_LEADS} leads',
                {"leads": [reason]},
            )
        leads = batch.validated_data["leads"]
        results: list = [None] * len(leads)
        candidates, positions = [], []
        for index, raw in enumerate(leads):
            lead = LeadRequest(data=raw)
            if not lead.is_valid():
                invalid = {"index": index, "error": "invalid", "fields": lead.errors}
                results[index] = BatchLeadInvalid(invalid).data
                continue
            candidates.append(_candidate(lead.validated_data, raw, key, in_batch=True))
            positions.append(index)
        return self._admitted(request, leads, results, candidates, positions)

    def _admitted(self, request, leads, results, candidates, positions) -> Response:
        headers: dict[str, str] = {}
        counts = {"accepted": 0, "duplicates": 0, "refused": 0}
        replayed = 0
        retry_afters = []
        if candidates:
            admitted = admission.admit(request.user, client_ip(request.META), candidates)
            if admitted.refusal:  # a rate limit refuses the whole request
                _refusal_raise(admitted.refusal, admitted.mode)
            headers["X-LeadFlow-Mode"] = admitted.mode
            for index, result in zip(positions, admitted.admissions, strict=True):
                results[index] = self._result(index, result)
                if result.refusal:
                    counts["refused"] += 1
                    retry_afters.append(result.refusal.retry_after)
                elif result.duplicate:
                    counts["duplicates"] += 1
                else:
                    counts["accepted"] += 1  # a replay too: accepted by an earlier try
                    replayed += result.replayed
        if replayed == len(leads):
            headers["Idempotent-Replayed"] = "true"
        # 202 when any lead was accepted, else 200 when any was a duplicate, else 429 when any
        # was refused by a limit, else (all invalid) 400.
        if counts["accepted"]:
            status = 202
        elif counts["duplicates"]:
            status = 200
        elif counts["refused"]:
            status = 429
            headers["Retry-After"] = str(min(retry_afters))
        else:
            status = 400
        answer = {**counts, "invalid": len(leads) - sum(counts.values()), "results": results}
        return Response(BatchAnswer(answer).data, status=status, headers=headers)

    @staticmethod
    def _result(index: int, result: admission.Admission) -> dict:
        serializer: type[serializers.Serializer]
        if result.refusal:
            serializer, answer = BatchLeadRefused, _refused(result.refusal)
        elif result.duplicate:
            serializer = BatchLeadDuplicate
            answer = {"trace_id": result.trace_id, "duplicate": True, "tier": result.tier}
        else:
            serializer, answer = BatchLeadAccepted, _accepted(result)
            if result.replayed:
                answer["replayed"] = True
        return serializer({"index": index, **answer}).data
