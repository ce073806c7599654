"""Hostile leads mixed into clean traffic, end to end: 1,000 clean leads from 3 tenants, every
refused hostile lead of tests/hostile.py and every odd-but-storable one among them, sent alone
and in batches. No 5xx anywhere; every accepted lead reaches `synced`; accounting closes per
tenant (accepted = synced + failed + duplicate + dead-lettered + pending)."""

import random
import uuid
from collections import Counter

import pytest

from apps.leads.models import Lead, LeadStatus
from tests.hostile import INVALID, PARSE_ERROR, STORED, batch_body, encode, hostile_leads
from tests.intake.test_hostile_live import JSON, check_answer
from tests.live.api import auth, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

BATCH_SIZE = 50


def clean_leads(count: int, tag: str) -> list[bytes]:
    tiers = ("critical", "normal", "low")
    return [
        encode(
            {
                "email": f"clean-{tag}-{i}@acme-{i % 5}.com",
                "name": f"Clean {i}",
                "company": "Acme",
                "phone": "+1 415 555 0100",
                "source": "google_ads",
                "region": "us",
                "priority": tiers[i % 3],
                "payload": {"form": "contact", "n": i},
            }
        )
        for i in range(count)
    ]


def send_mixed(api, key: str, clean: list[bytes], hostile: list, rng: random.Random):
    """Half the clean leads in batches, hostile leads slipped in; the other half alone, hostile
    leads posted between them. Returns (accepted trace ids, clean ones among them, problems)."""
    accepted, clean_accepted, problems, statuses = [], [], [], Counter()
    batched, alone = clean[: len(clean) // 2], clean[len(clean) // 2 :]
    batchable = [case for case in hostile if case.answer != PARSE_ERROR]
    rng.shuffle(batchable)
    for_batches, for_singles = batchable[::2], batchable[1::2]
    for_singles += [case for case in hostile if case.answer == PARSE_ERROR]

    for start in range(0, len(batched), BATCH_SIZE):
        items = [(None, body) for body in batched[start : start + BATCH_SIZE]]
        for _ in range(2):
            if for_batches:
                case = for_batches.pop()
                items.insert(rng.randrange(len(items) + 1), (case, case.body))
        if start + BATCH_SIZE >= len(batched):  # the last batch takes what is left
            items += [(case, case.body) for case in for_batches]
            for_batches = []
        response = api.post(
            "/api/v1/leads/batch",
            content=batch_body([body for _, body in items]),
            headers={**auth(key), **JSON},
        )
        statuses[response.status_code] += 1
        assert response.status_code == 202, response.text
        for (case, _), result in zip(items, response.json()["results"], strict=True):
            status = 202 if "trace_id" in result else 400
            if case is None:
                if status != 202:
                    problems.append(f"clean lead refused: {result}")
                else:
                    clean_accepted.append(result["trace_id"])
            elif problem := check_answer(case, status, result):
                problems.append(problem)
            if status == 202:
                accepted.append(result["trace_id"])

    singles = [(None, body) for body in alone]
    for case in for_singles:
        singles.insert(rng.randrange(len(singles) + 1), (case, case.body))
    for case, body in singles:
        response = api.post("/api/v1/leads", content=body, headers={**auth(key), **JSON})
        statuses[response.status_code] += 1
        answer = response.json()
        if case is None:
            if response.status_code != 202:
                problems.append(f"clean lead refused: {response.status_code} {answer}")
            else:
                clean_accepted.append(answer["trace_id"])
        elif problem := check_answer(case, response.status_code, answer):
            problems.append(problem)
        if response.status_code == 202:
            accepted.append(answer["trace_id"])
    assert not any(status >= 500 for status in statuses), statuses
    return accepted, clean_accepted, problems


def test_hostile_leads_among_1000_clean_ones_from_3_tenants(api, make_tenant, double):
    rng = random.Random(10)
    tenants = [
        make_tenant("webhook", crm_webhook_url=f"{double.url}/crm/h1"),
        make_tenant("local-a"),
        make_tenant("local-b"),
    ]
    tag = uuid.uuid4().hex[:8]
    every_case = hostile_leads(tag)
    refused = [case for case in every_case if case.answer != STORED]
    odd = [case for case in every_case if case.answer == STORED]
    assert len(refused) >= 50
    accepted: dict[int, list[str]] = {}
    clean_ids: list[str] = []
    problems: list[str] = []
    for index, (tenant, key) in enumerate(tenants):
        # Each tenant gets a third of the refused leads; the odd ones go to every tenant
        # (their own e-mail addresses, so pool A's dedup never joins them).
        mine = refused[index::3] + [
            case for case in hostile_leads(f"{tag}t{index}") if case.answer == STORED
        ]
        count = 334 if index == 0 else 333
        ids, clean, wrong = send_mixed(api, key, clean_leads(count, f"{tag}-{index}"), mine, rng)
        accepted[tenant.id] = ids
        clean_ids += clean
        problems += wrong
    assert not problems, "\n".join(problems)
    assert len(clean_ids) == 1000
    assert sum(map(len, accepted.values())) == 1000 + 3 * len(odd)

    all_ids = [trace_id for ids in accepted.values() for trace_id in ids]

    def synced() -> Counter:
        return Counter(Lead.objects.filter(trace_id__in=all_ids).values_list("status", flat=True))

    wait_until(
        lambda: synced()[LeadStatus.SYNCED] == len(all_ids),
        timeout=300,
        message=f"not all synced: {synced()}",
    )
    # Accounting per tenant: every accepted lead is a row, and here every row is synced.
    for tenant, _ in tenants:
        rows = Counter(Lead.objects.filter(tenant=tenant).values_list("status", flat=True))
        terminal = sum(
            rows[status]
            for status in (
                LeadStatus.SYNCED,
                LeadStatus.FAILED,
                LeadStatus.DUPLICATE,
                LeadStatus.DEAD_LETTERED,
            )
        )
        pending = sum(rows.values()) - terminal
        assert len(accepted[tenant.id]) == terminal + pending == rows[LeadStatus.SYNCED], rows
    # The webhook tenant's CRM got each of its leads once, odd ones included.
    delivered = [lead["trace_id"] for call in double.calls("crm") for lead in call["body"]["leads"]]
    assert sorted(delivered) == sorted(accepted[tenants[0][0].id])
    assert {case.answer for case in refused} == {INVALID, PARSE_ERROR}
