"""Erasure (apps/retention/erasure.py) against the real PostgreSQL and Redis: one tenant's
leads for one address leave no trace in any table or Redis key; another tenant's leads for the
same address stay; a repeat finds nothing and says so; every request is audited by a hash."""

import hashlib
import json
import uuid

import pytest
from django.apps import apps
from django.db import connection
from django.utils import timezone

from apps.control.models import DeferredKind, DeferredWork, Mode
from apps.crm.models import CrmSync, DeadLetter, DeadLetterStage
from apps.enrichment.models import LeadEnrichment
from apps.leads.models import Lead, LeadStage, LeadStatus
from apps.retention.erasure import email_sha256, leads_erase
from apps.retention.metrics import ERASED_LEADS, ERASURES
from apps.retention.models import Erasure
from apps.tenants.services import tenant_create
from leadflow import redis_keys
from leadflow.redis_conn import get_inbox_redis, get_redis
from tests.factories import lead_for_crm_make

pytestmark = pytest.mark.django_db

EMAIL = "ada.lovelace@example.com"


def _tenant():
    return tenant_create(f"erasure-{uuid.uuid4().hex[:8]}")[0]


def _stored(tenant, email: str = EMAIL, status: str = LeadStatus.SYNCED, **fields) -> Lead:
    """A lead as the pipeline leaves it: its row, stage results, and its Redis keys."""
    lead = lead_for_crm_make(
        tenant, status=status, email=email, payload={"note": f"write to {email}"}
    )
    trace_id = str(lead.trace_id)
    LeadEnrichment.objects.create(lead=lead, provider="local", data={"contact": email})
    CrmSync.objects.create(
        lead=lead, adapter="local", response={"echo": email}, synced_at=timezone.now()
    )
    DeadLetter.objects.create(
        tenant=tenant, lead=lead, stage=DeadLetterStage.CRM, error=f"CRM refused {email}"
    )
    DeferredWork.objects.create(
        kind=DeferredKind.ENRICHMENT, tenant=tenant, lead=lead, mode=Mode.NORMAL
    )
    # The trace and dedup keys live with the inboxes (a Redis Cluster's under make test-cluster).
    inboxes = get_inbox_redis()
    inboxes.set(redis_keys.trace_key(trace_id), f"{tenant.id}|2|0|1|0", ex=3600)
    digest = hashlib.sha256(f"{trace_id}-body".encode()).hexdigest()
    inboxes.set(redis_keys.dedup_key(tenant.id, digest), f"{trace_id}|2", ex=3600)
    client = get_redis()
    client.set(redis_keys.crm_lease_key(tenant.id, trace_id), "token", ex=60)
    client.set(redis_keys.crm_sent_key(tenant.id, trace_id), f"delivery|{email}", ex=3600)
    return lead


def _quarantined(tenant, sent_email: str) -> Lead:
    """Failed at pool A: the row holds what could be stored, the entry what was sent."""
    lead = lead_for_crm_make(
        tenant,
        status=LeadStatus.FAILED,
        email="",
        failed_stage=LeadStage.QUALIFICATION,
        failed_reason="name: Null characters are not allowed.",
    )
    entry = {"trace_id": str(lead.trace_id), "email": sent_email, "name": "Ada\x00"}
    Lead.objects.filter(pk=lead.pk).update(failed_entry=json.dumps(entry))
    return lead


def _rows_naming(text: str) -> dict[str, list[str]]:
    """Every row of every table of LeadFlow's (and Django's) whose any column holds `text`."""
    found = {}
    with connection.cursor() as cursor:
        for model in apps.get_models(include_auto_created=True):
            table = connection.ops.quote_name(model._meta.db_table)
            cursor.execute(
                f"SELECT row_to_json(t)::text FROM {table} t WHERE row_to_json(t)::text ILIKE %s",
                [f"%{text}%"],
            )
            rows = [row for (row,) in cursor.fetchall()]
            if rows:
                found[model._meta.db_table] = rows
    return found


def _redis_naming(text: str) -> list[str]:
    """Every Redis key whose name or value holds `text`."""
    needle = text.lower().encode()
    hits = []
    clients = [get_redis()] + ([get_inbox_redis()] if get_inbox_redis() is not get_redis() else [])
    for client, name in ((c, n) for c in clients for n in c.scan_iter(count=1000)):
        kind = client.type(name)
        if kind == b"string":
            values = [client.get(name) or b""]
        elif kind == b"hash":
            values = [b"%s=%s" % pair for pair in client.hgetall(name).items()]
        elif kind == b"list":
            values = client.lrange(name, 0, -1)
        elif kind == b"set":
            values = list(client.smembers(name))
        elif kind == b"zset":
            values = client.zrange(name, 0, -1)
        else:
            values = []
        if needle in name.lower() or any(needle in value.lower() for value in values):
            hits.append(name.decode())
    return hits


def test_erasure_leaves_nothing_findable_and_the_other_tenants_leads_stay():
    tenant, other = _tenant(), _tenant()
    erased = [_stored(tenant), _stored(tenant, status=LeadStatus.DEAD_LETTERED)]
    erased.append(_quarantined(tenant, "  Ada.Lovelace@EXAMPLE.com"))
    kept_same_tenant = _stored(tenant, email="grace@example.com")
    kept_other_tenant = _stored(other)
    erased_ids = [str(lead.trace_id) for lead in erased]

    erasure, counts = leads_erase(tenant, " ADA.Lovelace@Example.COM ", "test", via="api")

    assert counts.leads == 3
    assert (counts.enrichments, counts.crm_syncs, counts.dead_letters) == (2, 2, 2)
    assert counts.deferred_work == 2
    assert counts.redis_keys == 8  # two stored leads: trace, dedup, lease, sent mark each
    assert not Lead.objects.filter(trace_id__in=erased_ids).exists()
    # Nothing in any table names the address or the erased leads but the other tenant's lead.
    other_id = str(kept_other_tenant.trace_id)
    for text in (EMAIL, *erased_ids):
        for table, rows in _rows_naming(text).items():
            assert all(other_id in row for row in rows), (text, table, rows)
    assert _rows_naming(EMAIL)["leads_lead"]  # the other tenant's lead is there to find
    # Nor in Redis: only the other tenant's keys still name its own lead.
    for trace_id in erased_ids:
        assert _redis_naming(trace_id) == [], trace_id
    naming = _redis_naming(EMAIL)
    assert redis_keys.crm_sent_key(other.id, other_id) in naming
    tenants_keys = (f"lf:dedup:{tenant.id}:", f"lf:crm:{{{tenant.id}}}:", "lf:trace:")
    assert not [key for key in naming if key.startswith(tenants_keys)], naming
    assert len(_redis_naming(other_id)) == 4
    # Everything else stays as it was.
    for lead in (kept_same_tenant, kept_other_tenant):
        assert Lead.objects.get(pk=lead.pk).email == lead.email
        assert LeadEnrichment.objects.filter(lead=lead).exists()
        assert CrmSync.objects.filter(lead=lead).exists()
        assert DeadLetter.objects.filter(lead=lead).exists()
    # Audited by a hash of the normalized address, never the address.
    assert erasure.email_sha256 == hashlib.sha256(EMAIL.encode()).hexdigest()
    assert erasure.email_sha256 == email_sha256("  ADA.LOVELACE@example.com")
    assert (erasure.tenant, erasure.leads, erasure.actor) == (tenant, 3, "test")
    assert erasure.counts["by_status"] == {"synced": 1, "dead_lettered": 1, "failed": 1}


def test_a_repeat_erases_nothing_and_says_so_in_its_own_audit_row():
    tenant = _tenant()
    _stored(tenant)
    before = ERASURES.labels("api")._value.get(), ERASED_LEADS.labels("api")._value.get()

    _, first = leads_erase(tenant, EMAIL, "test", via="api")
    _, again = leads_erase(tenant, EMAIL, "test", via="api")

    assert (first.leads, first.redis_keys) == (1, 4)
    assert vars(again) == dict.fromkeys(vars(again), 0)
    audit = list(
        Erasure.objects.filter(tenant=tenant).order_by("id").values_list("leads", flat=True)
    )
    assert audit == [1, 0]
    after = ERASURES.labels("api")._value.get(), ERASED_LEADS.labels("api")._value.get()
    assert (after[0] - before[0], after[1] - before[1]) == (2, 1)


def test_the_admin_action_asks_for_the_address_then_erases_it(admin_client):
    tenant, other = _tenant(), _tenant()
    lead, kept = _stored(tenant), _stored(other)
    url = "/admin/tenants/tenant/"
    chosen = {"action": "erase_person", "_selected_action": [tenant.pk]}

    asked = admin_client.post(url, chosen)
    assert asked.status_code == 200
    assert b"Erase a person" in asked.content and tenant.name.encode() in asked.content

    refused = admin_client.post(url, {**chosen, "apply": "1", "email": "not an address"})
    assert refused.status_code == 200  # the form again, with the error
    assert Lead.objects.filter(pk=lead.pk).exists()

    done = admin_client.post(url, {**chosen, "apply": "1", "email": EMAIL.upper()}, follow=True)
    assert done.status_code == 200
    assert b"1 lead(s) erased" in done.content
    assert not Lead.objects.filter(pk=lead.pk).exists()
    assert Lead.objects.filter(pk=kept.pk).exists()
    [erasure] = Erasure.objects.filter(tenant=tenant)
    assert erasure.actor.startswith("admin ")
    # The audit is read-only in the admin: listed, not changed or deleted.
    listed = admin_client.get("/admin/retention/erasure/")
    assert listed.status_code == 200 and erasure.email_sha256[:12].encode() in listed.content
    assert admin_client.get("/admin/retention/erasure/add/").status_code == 403
    runs = admin_client.get("/admin/retention/retentionrun/")
    assert runs.status_code == 200
