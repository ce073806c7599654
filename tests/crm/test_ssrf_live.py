"""The SSRF guard on the live platform: tenants whose webhook URL points into LeadFlow's own
network (loopback by name and by literal, 0.0.0.0, 10.x, the metadata address, a URL with
credentials, a CRM that redirects to loopback) post leads in one shared batch with a tenant
whose CRM is fine and one on the local adapter. Pool C refuses every bad URL at send time: each
attacker's leads end dead-lettered at once with the rule named, nothing reaches the addresses,
and the other tenants' leads are synced, their deliveries verified by the receivers' library.

The URLs are written to the rows directly: saving them through admin or tenant_create is
refused (tests/tenants/test_webhook_settings.py); this is a row saved before the guard, or a
name whose DNS changed since it was saved.
"""

import uuid
from collections import Counter
from urllib.parse import urlsplit

import pytest
from standardwebhooks import Webhook

from apps.control.dispatcher import Dispatcher
from apps.crm.models import DeadLetter
from apps.leads.models import Lead
from apps.tenants.models import Tenant, webhook_signing_secrets
from tests.live.api import auth, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def attacks(double_url: str) -> dict[str, tuple[str, str]]:
    """name -> (webhook URL, the rule that refuses it). The double listens on 127.0.0.1 (the
    one host allowed in the tests), so each URL reaches it unless the guard stops it."""
    port = urlsplit(double_url).port
    run = uuid.uuid4().hex[:8]
    return {
        "localhost": (f"http://localhost:{port}/crm/ssrf-localhost-{run}", "loopback"),
        "mapped": (f"http://[::ffff:127.0.0.1]:{port}/crm/ssrf-mapped-{run}", "loopback"),
        "unspecified": (f"http://0.0.0.0:{port}/crm/ssrf-unspecified-{run}", "unspecified"),
        "private": (f"http://10.255.255.1:{port}/crm/ssrf-private-{run}", "private"),
        "metadata": ("http://169.254.169.254/latest/meta-data/", "link-local"),
        "credentials": (
            f"http://user:pass@127.0.0.1:{port}/crm/ssrf-credentials-{run}",
            "credentials",
        ),
        "redirect": (f"{double_url}/crm/ssrf-redirect-{run}", "redirect"),
    }


def post(api, key: str, count: int) -> list[str]:
    """Leads under the scoring threshold (free-mail): straight from pool A to pool C."""
    leads = [{"email": f"someone-{uuid.uuid4().hex[:10]}@gmail.com"} for _ in range(count)]
    response = api.post("/api/v1/leads/batch", json={"leads": leads}, headers=auth(key))
    assert response.status_code == 202, response.text
    return [result["trace_id"] for result in response.json()["results"]]


def statuses(trace_ids: list[str]) -> Counter:
    return Counter(Lead.objects.filter(trace_id__in=trace_ids).values_list("status", flat=True))


def wait_for(trace_ids: list[str], status: str, timeout: float) -> None:
    try:
        wait_until(lambda: statuses(trace_ids) == {status: len(trace_ids)}, timeout=timeout)
    except AssertionError:
        raise AssertionError(
            f"not all {status} after {timeout}s: {dict(statuses(trace_ids))}"
        ) from None


def test_webhook_urls_into_leadflows_network_are_refused_at_send_time_and_dead_lettered(
    api, double, make_tenant, control_stopped
):
    run_attacks = attacks(double.url)
    internal_path = f"/crm/ssrf-internal-{uuid.uuid4().hex[:8]}"
    double.configure(
        "crm",
        path=urlsplit(run_attacks["redirect"][0]).path,
        redirect_to=f"http://127.0.0.1:{urlsplit(double.url).port}{internal_path}",
    )
    attackers = {}
    for name, (url, _) in run_attacks.items():
        tenant, key = make_tenant(f"ssrf-{name}")
        Tenant.objects.filter(pk=tenant.pk).update(crm_webhook_url=url)  # past the save check
        attackers[name] = key
    good_path = f"/crm/ssrf-good-{uuid.uuid4().hex[:8]}"
    good, good_key = make_tenant("ssrf-good", crm_webhook_url=double.url + good_path)
    _, local_key = make_tenant("ssrf-local")

    # The attackers' leads first: one dispatch pass puts everyone's in one shared batch.
    attacker_ids = {name: post(api, key, 2) for name, key in attackers.items()}
    good_ids, local_ids = post(api, good_key, 3), post(api, local_key, 3)
    assert Dispatcher().dispatch_once() >= 2 * len(attackers) + 6

    wait_for(good_ids + local_ids, "synced", timeout=30)
    for name, trace_ids in attacker_ids.items():
        wait_for(trace_ids, "dead_lettered", timeout=30)
        rule = run_attacks[name][1]
        for letter in DeadLetter.objects.filter(lead_id__in=trace_ids):
            assert f"SSRF guard (rule: {rule})" in letter.error, (name, letter.error)
            assert letter.attempts == 1, (name, letter.error)  # permanent: never retried

    # Nothing reached the double by the internal names, the redirect's target, or anywhere
    # but the redirecting path itself (which only answered 302).
    reached = {call["path"] for call in double.calls("crm")}
    assert reached == {good_path, urlsplit(run_attacks["redirect"][0]).path}, reached
    assert not double.calls("crm", path=internal_path)
    # The good tenant's deliveries verify with the receivers' own library.
    [secret] = webhook_signing_secrets(good)
    for call in double.calls("crm", path=good_path):
        assert Webhook(secret).verify(call["raw"], call["headers"])["tenant"] == good.name
