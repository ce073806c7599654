"""How leads reach a tenant's CRM: a signed webhook, or the local adapter when there is no URL.

Webhooks are signed as Standard Webhooks (standardwebhooks.com): `webhook-id` (the same for the
same leads, so a receiver drops repeats), `webhook-timestamp` (the send time; receivers refuse
one more than 5 minutes off, so a captured delivery cannot be replayed later) and
`webhook-signature`, "v1,<base64 HMAC-SHA256 of id.timestamp.body>" under each of the tenant's
active secrets (two during a rotation, space-separated), made by the `standardwebhooks` library
the receiver verifies with.

Failures come in two kinds so the task knows what to do: CrmUnavailable is transient (retry
with backoff), CrmRejected is permanent (retrying the same body cannot help: dead-letter).
"""

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Protocol

import pybreaker
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from standardwebhooks import Webhook

from apps.crm.models import CrmAdapterName
from apps.tenants.models import Tenant, webhook_signing_secrets
from leadflow.breakers import breaker
from leadflow.outbound import (
    OutboundError,
    OutboundReply,
    json_storable,
    outbound_post,
    text_storable,
)

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
# The delivery id under its old name, the same value as webhook-id: kept for one release so
# receivers that drop repeats by it go on working while they move to webhook-id.
DELIVERY_HEADER = "X-LeadFlow-Delivery"
# 408 and 429 say "not now", not "never": they are retried like a 5xx.
TRANSIENT_4XX = frozenset({408, 429})
# Refusals that may be about one lead of the group (a field the CRM does not take, a body too
# large): the service splits the group to let the others through.
LEAD_REFUSALS = frozenset({400, 413, 422})
# What of a reply each lead's CrmSync row keeps: a reply is per delivery, a row per lead.
STORED_REPLY_MAX_CHARS = 2000
# Namespace for delivery ids: the same set of leads always gets the same id.
_DELIVERY_NAMESPACE = uuid.UUID("5b0a3f2e-9c8d-4e8f-a6a1-3c1f0e7d2b44")


class CrmUnavailable(Exception):
    """Transient: timeout, connection error, HTTP 5xx/408/429, or the tenant's breaker is open."""


class CrmRejected(Exception):
    """Permanent: the CRM refused the delivery (a 4xx other than 408/429), or the tenant's URL
    cannot be called at all (the SSRF guard refused it, or a redirect: the message names the
    rule), or the tenant has no webhook secret to sign with."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def may_be_about_leads(self) -> bool:
        """Whether the refusal may be about some of the leads sent (worth splitting the group);
        401/403/404 and the like are about the tenant's endpoint, whichever leads are sent."""
        return self.status in LEAD_REFUSALS


class CrmAdapter(Protocol):
    name: str
    remote: bool  # a delivery reaches another system (so it is leased, and never sent twice)
    paced: bool  # deliveries wait for the tenant's CRM pace (LEADFLOW_CRM_RATE_PER_SECOND)
    timeout_seconds: float  # the longest one delivery may take

    def deliver(self, tenant: Tenant, leads_payload: list[dict]) -> dict:
        """Deliver the leads or raise CrmUnavailable / CrmRejected; return what to store of the
        CRM's answer (small, and storable in PostgreSQL)."""
        ...


def webhook_headers(secrets: list[str], msg_id: str, body: bytes, sent_at: int) -> dict[str, str]:
    """The Standard Webhooks headers of a delivery: one v1 signature per secret (whsec_...)."""
    timestamp = datetime.fromtimestamp(sent_at, tz=UTC)
    text = body.decode()  # the library signs text; the body is ASCII JSON
    signatures = " ".join(Webhook(secret).sign(msg_id, timestamp, text) for secret in secrets)
    return {ID_HEADER: msg_id, TIMESTAMP_HEADER: str(sent_at), SIGNATURE_HEADER: signatures}


def delivery_id(leads_payload: list[dict]) -> str:
    """Stable across retries and redeliveries of the same leads, so a receiver can drop repeats."""
    trace_ids = sorted(str(lead["trace_id"]) for lead in leads_payload)
    return str(uuid.uuid5(_DELIVERY_NAMESPACE, ",".join(trace_ids)))


class WebhookAdapter:
    """POSTs {"tenant", "leads"} as JSON to the tenant's URL, signed with its secrets."""

    name = CrmAdapterName.WEBHOOK.value
    remote = True
    paced = True  # a real CRM: its rate limit is respected (apps/crm/pace.py)

    @property
    def timeout_seconds(self) -> float:
        return settings.CRM_TIMEOUT_SECONDS

    def deliver(self, tenant: Tenant, leads_payload: list[dict]) -> dict:
        # Sign exactly the bytes that go on the wire: the receiver verifies the raw body.
        body = json.dumps(
            {"tenant": tenant.name, "leads": leads_payload},
            cls=DjangoJSONEncoder,
            separators=(",", ":"),
        ).encode()
        delivery = delivery_id(leads_payload)
        secrets = webhook_signing_secrets(tenant)
        if not secrets:  # every tenant is given one; never sent unsigned
            raise CrmRejected(
                f"CRM of tenant {tenant.name!r}: no active webhook secret to sign with "
                "(create one in admin or with `manage.py webhook_secrets create`)"
            )
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "LeadFlow-CRM-Sync/1",
            DELIVERY_HEADER: delivery,
            # Signed just before the call: a retry is signed anew, with its own timestamp.
            **webhook_headers(secrets, delivery, body, int(time.time())),
        }

        tenant_breaker = breaker(f"crm:{tenant.id}")
        unusable_url: OutboundError | None = None
        try:
            # calling() rather than call(): call() holds the breaker's lock for the whole
            # request, which would serialize every thread posting to this tenant's CRM.
            with tenant_breaker.calling():
                try:
                    reply = self._post(tenant.crm_webhook_url, body, headers)
                except OutboundError as exc:
                    if not exc.permanent:
                        raise CrmUnavailable(f"CRM {exc}") from exc
                    unusable_url, reply = exc, None  # the tenant's setting, not an outage
        except pybreaker.CircuitBreakerError as exc:
            raise CrmUnavailable(f"CRM of tenant {tenant.name!r}: breaker open ({exc})") from exc
        if unusable_url is not None:
            raise CrmRejected(f"CRM of tenant {tenant.name!r}: {unusable_url}")

        # Outside the breaker: a refusal means the CRM is up, so it must not trip it.
        if not 200 <= reply.status < 300:
            raise CrmRejected(
                f"CRM of tenant {tenant.name!r} answered {reply.status}: {reply.excerpt(500)}",
                status=reply.status,
            )
        return {"status": reply.status, "delivery_id": delivery, **reply_stored(reply)}

    @staticmethod
    def _post(url: str, body: bytes, headers: dict[str, str]) -> OutboundReply:
        # Raising here counts as a failure for the breaker; returning counts as a success.
        reply = outbound_post(
            url,
            content=body,
            headers=headers,
            deadline_seconds=settings.CRM_TIMEOUT_SECONDS,
            max_bytes=settings.CRM_RESPONSE_MAX_BYTES,
            dependency="crm",
        )
        if reply.status >= 500 or reply.status in TRANSIENT_4XX:
            raise CrmUnavailable(f"CRM answered {reply.status}: {reply.excerpt(200)}")
        return reply


def reply_stored(reply: OutboundReply) -> dict:
    """What is kept of the CRM's reply in each lead's CrmSync row (and shown in GET): its JSON
    when small and storable, else a text excerpt; body_truncated says when something was cut."""
    if not reply.truncated:
        try:
            parsed = reply.json()
        except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
            parsed = None
        if (
            parsed is not None
            and json_storable(parsed)
            and len(json.dumps(parsed, ensure_ascii=False)) <= STORED_REPLY_MAX_CHARS
        ):
            return {"body": parsed, "body_truncated": False}
    text = reply.body.decode("utf-8", errors="replace")
    cut = reply.truncated or len(text) > STORED_REPLY_MAX_CHARS
    stored = {"body": text_storable(text, STORED_REPLY_MAX_CHARS), "body_truncated": cut}
    if cut:
        # How much was read: the cap when the CRM sent more (the rest was never read).
        stored["body_bytes_read"] = len(reply.body)
    return stored


class LocalAdapter:
    """No network: the CrmSync rows written by the service are the CRM."""

    name = CrmAdapterName.LOCAL.value
    remote = False
    paced = False  # nothing remote to protect
    timeout_seconds = 0.0

    def deliver(self, tenant: Tenant, leads: list) -> dict:
        """Only counts: pool C calls it with the trace ids, building no payload for it."""
        return {"recorded": len(leads)}


def adapter_for(tenant: Tenant) -> CrmAdapter:
    """The webhook adapter when the tenant has a URL, else the local one."""
    return WebhookAdapter() if tenant.crm_webhook_url else LocalAdapter()
