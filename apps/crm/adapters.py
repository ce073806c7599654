"""How leads reach a tenant's CRM: a signed webhook, or the local adapter when there is no URL.

Failures come in two kinds so the task knows what to do: CrmUnavailable is transient (retry
with backoff), CrmRejected is permanent (retrying the same body cannot help: dead-letter).
"""

import hashlib
import hmac
import json
import os
import threading
import uuid
from typing import Protocol

import httpx
import pybreaker
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder

from apps.crm.models import CrmAdapterName
from apps.tenants.models import Tenant
from leadflow.breakers import breaker

SIGNATURE_HEADER = "X-LeadFlow-Signature"
DELIVERY_HEADER = "X-LeadFlow-Delivery"
# 408 and 429 say "not now", not "never": they are retried like a 5xx.
TRANSIENT_4XX = frozenset({408, 429})
# Namespace for delivery ids: the same set of leads always gets the same id.
_DELIVERY_NAMESPACE = uuid.UUID("5b0a3f2e-9c8d-4e8f-a6a1-3c1f0e7d2b44")


class CrmUnavailable(Exception):
    """Transient: timeout, connection error, HTTP 5xx/408/429, or the tenant's breaker is open."""


class CrmRejected(Exception):
    """Permanent: the CRM refused the delivery (a 4xx other than 408/429, or a redirect)."""


class CrmAdapter(Protocol):
    name: str
    paced: bool  # deliveries wait for the tenant's CRM pace (LEADFLOW_CRM_RATE_PER_SECOND)

    def deliver(self, tenant: Tenant, leads_payload: list[dict]) -> dict:
        """Deliver the leads or raise CrmUnavailable / CrmRejected; return what the CRM answered."""
        ...


def webhook_signature(secret: str, body: bytes) -> str:
    """The X-LeadFlow-Signature value: "sha256=" + hex HMAC-SHA256 of the raw body under secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def delivery_id(leads_payload: list[dict]) -> str:
    """Stable across retries and redeliveries of the same leads, so a receiver can drop repeats."""
    trace_ids = sorted(str(lead["trace_id"]) for lead in leads_payload)
    return str(uuid.uuid5(_DELIVERY_NAMESPACE, ",".join(trace_ids)))


_http: httpx.Client | None = None
_http_pid: int | None = None
_http_lock = threading.Lock()


def _http_client() -> httpx.Client:
    # One pooled client per process (httpx.Client is thread-safe); never shared across fork.
    global _http, _http_pid
    with _http_lock:
        if _http is None or _http_pid != os.getpid():
            _http = httpx.Client(
                follow_redirects=False,
                headers={"User-Agent": "LeadFlow-CRM-Sync/1"},
            )
            _http_pid = os.getpid()
        return _http


class WebhookAdapter:
    """POSTs {"tenant", "leads"} as JSON to the tenant's URL, signed with its secret."""

    name = CrmAdapterName.WEBHOOK.value
    paced = True  # a real CRM: its rate limit is respected (apps/crm/pace.py)

    def deliver(self, tenant: Tenant, leads_payload: list[dict]) -> dict:
        # Sign exactly the bytes that go on the wire: the receiver verifies the raw body.
        body = json.dumps(
            {"tenant": tenant.name, "leads": leads_payload},
            cls=DjangoJSONEncoder,
            separators=(",", ":"),
        ).encode()
        delivery = delivery_id(leads_payload)
        headers = {"Content-Type": "application/json", DELIVERY_HEADER: delivery}
        if tenant.crm_webhook_secret:
            headers[SIGNATURE_HEADER] = webhook_signature(tenant.crm_webhook_secret, body)

        tenant_breaker = breaker(f"crm:{tenant.id}")
        try:
            # calling() rather than call(): call() holds the breaker's lock for the whole
            # request, which would serialize every thread posting to this tenant's CRM.
            with tenant_breaker.calling():
                response = self._post(tenant.crm_webhook_url, body, headers)
        except pybreaker.CircuitBreakerError as exc:
            raise CrmUnavailable(f"CRM of tenant {tenant.name!r}: breaker open ({exc})") from exc

        # Outside the breaker: a refusal means the CRM is up, so it must not trip it.
        if not response.is_success:
            raise CrmRejected(
                f"CRM of tenant {tenant.name!r} answered {response.status_code}: "
                f"{response.text[:500]}"
            )
        return {
            "status": response.status_code,
            "delivery_id": delivery,
            "body": _response_body(response),
        }

    @staticmethod
    def _post(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        # Raising here counts as a failure for the breaker; returning counts as a success.
        try:
            response = _http_client().post(
                url, content=body, headers=headers, timeout=settings.CRM_TIMEOUT_SECONDS
            )
        except httpx.TimeoutException as exc:
            raise CrmUnavailable(f"CRM timed out after {settings.CRM_TIMEOUT_SECONDS}s") from exc
        except httpx.TransportError as exc:
            raise CrmUnavailable(f"CRM unreachable: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500 or response.status_code in TRANSIENT_4XX:
            raise CrmUnavailable(f"CRM answered {response.status_code}: {response.text[:200]}")
        return response


def _response_body(response: httpx.Response) -> dict | list | str:
    try:
        return response.json()
    except ValueError:
        return response.text[:1000]


class LocalAdapter:
    """No network: the CrmSync rows written by the service are the CRM."""

    name = CrmAdapterName.LOCAL.value
    paced = False  # nothing remote to protect

    def deliver(self, tenant: Tenant, leads_payload: list[dict]) -> dict:
        return {"recorded": len(leads_payload)}


def adapter_for(tenant: Tenant) -> CrmAdapter:
    """The webhook adapter when the tenant has a URL, else the local one."""
    return WebhookAdapter() if tenant.crm_webhook_url else LocalAdapter()
