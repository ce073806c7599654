"""Pool A's quarantine (apps.leads.services + apps.leads.quarantine) against the real PostgreSQL:
a lead that cannot be stored fails alone, its batch-mates and the other tenants' leads go on."""

import json
import uuid

import pytest
from django.db import connection

from apps.leads.models import Lead, LeadStage, LeadStatus
from apps.leads.quarantine import entries_quarantine, failed_leads_replay
from apps.leads.selectors import lead_status
from apps.leads.services import leads_qualify
from tests.factories import tenant_make
from tests.leads.test_qualify import entry

pytestmark = pytest.mark.django_db


@pytest.fixture
def tenants(db):
    return [tenant_make("quarantine")[0] for _ in range(2)]


# Leads that pass an old intake (before it refused them at the door) and that PostgreSQL or
# normalization cannot take as they are.
POISON = {
    "nul in name": {"name": "x\x00y"},
    "nul in company": {"company": "Acme\x00"},
    "nul in a payload value": {"payload": {"note": "a\x00b"}},
    "nul in a payload key": {"payload": {"k\x00ey": "v"}},
    "nul deep in a payload": {"payload": {"a": [{"b": {"c": ["\x00"]}}]}},
    "email that grows when lower-cased": {"email": "İ" * 130 + "@x.io"},
    "lone surrogate": {"company": "Acme \ud800"},
    "tier that is none": {"tier": "urgent"},
    "payload that is not an object": {"payload": ["a"]},
    "received_at that is no time": {"received_at": "yesterday"},
}


def test_poison_leads_fail_alone_and_everyone_else_is_stored(tenants):
    noisy, clean = tenants
    poison = [entry(noisy, **fields) for fields in POISON.values()]
    good_noisy = [entry(noisy) for _ in range(5)]
    good_clean = [entry(clean) for _ in range(40)]
    batch = good_clean[:20] + poison[:5] + good_noisy + poison[5:] + good_clean[20:]

    outcome = leads_qualify(batch)

    good_ids = {e["trace_id"] for e in good_noisy + good_clean}
    assert set(outcome.to_enrich + outcome.to_sync) == good_ids
    assert Lead.objects.filter(trace_id__in=good_ids, status=LeadStatus.QUALIFIED).count() == 45
    failed = {str(lead.trace_id): lead for lead in Lead.objects.filter(status=LeadStatus.FAILED)}
    assert set(failed) == {e["trace_id"] for e in poison}
    for (case, fields), poisoned in zip(POISON.items(), poison, strict=True):
        lead = failed[poisoned["trace_id"]]
        assert lead.failed_stage == LeadStage.QUALIFICATION, case
        assert lead.failed_reason and lead.failed_at, case
        assert lead.tenant_id == noisy.id
        # The entry as it came, for a replay: what the row could not hold is kept here.
        kept = json.loads(lead.failed_entry)
        assert {key: kept[key] for key in fields} == fields, case
    assert "name" in failed[poison[0]["trace_id"]].failed_reason
    assert "email" in failed[poison[5]["trace_id"]].failed_reason
    assert "\x00" not in failed[poison[0]["trace_id"]].name  # what the row holds is storable


def test_a_redelivered_batch_with_poison_changes_nothing(tenants):
    noisy, clean = tenants
    batch = [entry(clean), entry(noisy, name="x\x00y"), entry(clean)]
    first = leads_qualify(batch)
    again = leads_qualify(batch)
    assert sorted(again.to_enrich + again.to_sync) == sorted(first.to_enrich + first.to_sync)
    assert Lead.objects.filter(status=LeadStatus.FAILED).count() == 1
    assert Lead.objects.count() == 3


def test_get_shows_the_failed_stage_and_reason(tenants):
    noisy, _ = tenants
    poisoned = entry(noisy, company="Acme\x00")
    leads_qualify([poisoned])
    body = lead_status(noisy.id, poisoned["trace_id"])
    assert body["status"] == "failed"
    assert body["failure"]["stage"] == "qualification"
    assert "company" in body["failure"]["reason"]


def test_a_failed_lead_is_nobodys_original_for_dedup(tenants):
    noisy, _ = tenants
    leads_qualify([entry(noisy, email="ada@acme.io", name="x\x00y")])
    later = entry(noisy, email="ada@acme.io")
    outcome = leads_qualify([later])
    assert outcome.to_enrich + outcome.to_sync == [later["trace_id"]]
    assert Lead.objects.get(trace_id=later["trace_id"]).status == LeadStatus.QUALIFIED


@pytest.fixture
def poison_constraint(db):
    """A rule PostgreSQL enforces that pool A's own checks do not know: the COPY itself fails,
    with the line of the row (a CHECK constraint) — rolled back with the test."""
    with connection.cursor() as cursor:
        cursor.execute(
            "ALTER TABLE leads_lead ADD CONSTRAINT test_no_poison CHECK (company <> 'poison')"
        )


@pytest.fixture
def poison_trigger(db):
    """The same rule checked after the statement (an AFTER trigger): the error names no line
    of the COPY, so pool A has to find the row by halving the batch."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION test_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF NEW.company = 'poison' THEN RAISE EXCEPTION 'poison lead %', NEW.trace_id"
            " USING ERRCODE = 'check_violation'; END IF; RETURN NULL; END $$;"
            " CREATE TRIGGER test_poison AFTER INSERT ON leads_lead"
            " FOR EACH ROW EXECUTE FUNCTION test_poison()"
        )


@pytest.mark.parametrize("rule", ["poison_constraint", "poison_trigger"])
def test_a_row_postgresql_refuses_fails_alone(tenants, rule, request):
    request.getfixturevalue(rule)
    noisy, clean = tenants
    batch = [entry(clean) for _ in range(300)]
    poisoned = [entry(noisy, company="poison"), entry(noisy, company="poison")]
    batch[17:17] = poisoned[:1]
    batch[250:250] = poisoned[1:] + [entry(noisy)]

    outcome = leads_qualify(batch)

    assert len(outcome.to_enrich + outcome.to_sync) == 301
    assert Lead.objects.filter(status=LeadStatus.QUALIFIED).count() == 301
    failed = Lead.objects.filter(status=LeadStatus.FAILED)
    assert {str(lead.trace_id) for lead in failed} == {p["trace_id"] for p in poisoned}
    assert all("CheckViolation" in lead.failed_reason for lead in failed)


def test_a_replayed_lead_is_qualified_once_its_cause_is_fixed(tenants, poison_constraint):
    """Replay sends the kept entry back to pool A, which replaces the failed row."""
    noisy, _ = tenants
    poisoned = entry(noisy, company="poison")
    leads_qualify([poisoned])
    assert Lead.objects.get(trace_id=poisoned["trace_id"]).status == LeadStatus.FAILED
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # Django's foreign keys are deferred
        cursor.execute("ALTER TABLE leads_lead DROP CONSTRAINT test_no_poison")
    # The replayed entry runs in pool A itself, as after an operator's fix.
    entries = [lead.failed_entry for lead in Lead.objects.filter(trace_id=poisoned["trace_id"])]
    replayed = leads_qualify([{**json.loads(raw), "replay": True} for raw in entries])
    assert replayed.to_enrich + replayed.to_sync == [poisoned["trace_id"]]
    lead = Lead.objects.get(trace_id=poisoned["trace_id"])
    assert (lead.status, lead.company, lead.failed_stage) == (LeadStatus.QUALIFIED, "poison", "")


def test_an_entry_of_a_deleted_tenant_is_dropped_not_stored(tenants):
    noisy, _ = tenants
    from apps.leads.quarantine import EntryFailure

    gone = entry(noisy)
    gone["tenant_id"] = 10**9
    assert entries_quarantine([EntryFailure(gone, "whatever", "test")]) == 0
    assert not Lead.objects.filter(trace_id=gone["trace_id"]).exists()


def test_replay_of_nothing_failed_sends_nothing(tenants):
    assert failed_leads_replay([str(uuid.uuid4())]) == 0
