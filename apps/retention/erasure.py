"""Erasure on request: every lead of one tenant for one e-mail address, removed wherever
LeadFlow keeps it, and the request audited (Erasure: the address's SHA-256, never the address).

Where a lead lives once stored: its row (leads_lead, the quarantine's fields included) and its
stage results (enrichment, CRM sync, dead letters, deferred work), deleted in one transaction
with the audit row; in Redis its trace key (its status while it was queued), its dedup key (a
hash of the request, found by its value: the lead's trace id), and pool C's delivery marks.
Redis is cleared first: a failure there (the API answers 503) leaves the rows in place, so the
client's retry finds everything again; a second request finds nothing and says so (zero counts).

The address is matched as pool A stored it (apps/leads/normalization.py); a quarantined lead
whose address could not be stored is matched by the entry it came in. A lead accepted moments
ago and still queued in Redis is not stored yet: README "Retention" says to repeat the request.
"""

import hashlib
import itertools
import json
from dataclasses import dataclass

from django.db import transaction

from apps.control.models import DeferredWork
from apps.crm.models import CrmSync, DeadLetter
from apps.enrichment.models import LeadEnrichment
from apps.leads.models import Lead, LeadStatus
from apps.leads.normalization import email_normalize
from apps.retention.metrics import erasure_counted
from apps.retention.models import Erasure
from apps.tenants.models import Tenant
from leadflow import redis_keys
from leadflow.redis_conn import get_inbox_redis, get_redis

DEDUP_SCAN_COUNT = 1000  # keys a SCAN step looks at: one round trip each


def email_sha256(email: str) -> str:
    """The audit's name for an address: SHA-256 of its normalized form."""
    return hashlib.sha256(email_normalize(email).encode()).hexdigest()


@dataclass(frozen=True)
class ErasureCounts:
    leads: int
    enrichments: int
    crm_syncs: int
    dead_letters: int
    deferred_work: int
    redis_keys: int


def leads_erase(tenant: Tenant, email: str, actor: str, via: str) -> tuple[Erasure, ErasureCounts]:
    """Erase the tenant's leads for `email` (any case or outer spaces); audited, idempotent."""
    normalized = email_normalize(email)
    found = _trace_ids(tenant.id, normalized)
    redis_keys = _redis_forget(tenant.id, found)
    with transaction.atomic():
        # Under lock, again: a lead pool A stored since the first read goes too.
        trace_ids = _trace_ids(tenant.id, normalized, lock=True)
        statuses: dict[str, int] = {}
        for status in Lead.objects.filter(trace_id__in=trace_ids).values_list("status", flat=True):
            statuses[status] = statuses.get(status, 0) + 1
        enrichments = LeadEnrichment.objects.filter(lead_id__in=trace_ids).delete()[0]
        crm_syncs = CrmSync.objects.filter(lead_id__in=trace_ids).delete()[0]
        dead_letters = DeadLetter.objects.filter(lead_id__in=trace_ids).delete()[0]
        deferred = DeferredWork.objects.filter(lead_id__in=trace_ids).delete()[0]
        leads = Lead.objects.filter(trace_id__in=trace_ids).delete()[0]
        late = set(trace_ids) - set(found)
        counts = ErasureCounts(leads, enrichments, crm_syncs, dead_letters, deferred, redis_keys)
        erasure = Erasure.objects.create(
            tenant=tenant,
            tenant_name=tenant.name,
            email_sha256=hashlib.sha256(normalized.encode()).hexdigest(),
            actor=actor[:150],
            leads=leads,
            counts={**counts.__dict__, "by_status": statuses},
        )
    if late:  # stored between the two reads: their keys go now
        extra = _redis_forget(tenant.id, sorted(late))
        counts = ErasureCounts(
            leads, enrichments, crm_syncs, dead_letters, deferred, redis_keys + extra
        )
        Erasure.objects.filter(pk=erasure.pk).update(
            counts={**counts.__dict__, "by_status": statuses}
        )
    erasure_counted(via, leads)
    return erasure, counts


def _trace_ids(tenant_id: int, normalized: str, lock: bool = False) -> list[str]:
    leads = Lead.objects.filter(tenant_id=tenant_id)
    if lock:
        leads = leads.select_for_update()
    trace_ids = {str(pk) for pk in leads.filter(email=normalized).values_list("pk", flat=True)}
    # Quarantined at pool A: the row holds what could be stored of the address, the entry all.
    quarantined = leads.filter(status=LeadStatus.FAILED).exclude(failed_entry="")
    for pk, entry in quarantined.values_list("pk", "failed_entry"):
        try:
            sent = json.loads(entry).get("email")
        except (ValueError, AttributeError):
            continue
        if isinstance(sent, str) and email_normalize(sent) == normalized:
            trace_ids.add(str(pk))
    return sorted(trace_ids)


def _redis_forget(tenant_id: int, trace_ids: list[str]) -> int:
    """Delete the leads' keys; returns how many existed."""
    if not trace_ids:
        return 0
    # The trace and dedup keys live with the inboxes (a Redis Cluster's, when there is one),
    # the CRM's leases and sent marks on REDIS_URL.
    inboxes = get_inbox_redis()
    deleted = inboxes.delete(*(redis_keys.trace_key(trace_id) for trace_id in trace_ids))
    crm = [redis_keys.crm_lease_key(tenant_id, trace_id) for trace_id in trace_ids]
    crm += [redis_keys.crm_sent_key(tenant_id, trace_id) for trace_id in trace_ids]
    deleted += get_redis().delete(*crm)
    return deleted + _dedup_keys_forget(inboxes, tenant_id, set(trace_ids))


def _dedup_keys_forget(client, tenant_id: int, trace_ids: set[str]) -> int:
    """A dedup key is named by a hash of the request, so it is found by its value ("<trace
    id>|<tier>", and for a lead sent with an Idempotency-Key its kept answer after: admit.lua):
    a SCAN of the tenant's keys, one round trip per DEDUP_SCAN_COUNT keys of the whole keyspace
    (an erasure is rare; the hot path is never slowed for it)."""
    pattern = redis_keys.dedup_key(tenant_id, "*")
    deleted = 0
    # scan_iter: on a Redis Cluster it scans every master. A tenant's dedup keys share its
    # shard's hash tag, so each chunk's MGET and DEL stay in one slot.
    names = client.scan_iter(match=pattern, count=DEDUP_SCAN_COUNT)
    while chunk := list(itertools.islice(names, DEDUP_SCAN_COUNT)):
        values = client.mget(chunk)
        doomed = [
            name
            for name, value in zip(chunk, values, strict=True)
            if value is not None and value.split(b"|", 1)[0].decode() in trace_ids
        ]
        if doomed:
            deleted += client.delete(*doomed)
    return deleted
