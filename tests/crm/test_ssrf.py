"""The SSRF guard's rules (leadflow/outbound_guard.py) and its checks at send time
(leadflow/outbound.py), against real sockets and the HTTP double on 127.0.0.1."""

import socket
from urllib.parse import urlsplit

import pytest

from apps.crm.models import DeadLetter
from apps.crm.services import leads_sync
from leadflow.outbound import OutboundError, outbound_post
from leadflow.outbound_guard import OutboundPolicy, OutboundRefused, url_check
from tests.factories import lead_for_crm_make, lead_ids

DEV = OutboundPolicy(allow_http=True, allowed_hosts=frozenset({"127.0.0.1"}))
PRODUCTION = OutboundPolicy(allow_http=False, allowed_hosts=frozenset())

REFUSED = [
    ("http://localhost:8000/hook", "loopback"),
    ("http://LOCALHOST./hook", "loopback"),
    ("http://crm.localhost/hook", "loopback"),
    ("http://127.0.0.2/hook", "loopback"),
    ("http://127.1/hook", "loopback"),
    ("http://2130706433/hook", "loopback"),
    ("http://0x7f.1/hook", "loopback"),
    ("http://[::1]/hook", "loopback"),
    ("http://[::ffff:127.0.0.1]/hook", "loopback"),
    ("http://[2002:7f00:1::]/hook", "loopback"),  # 6to4 around 127.0.0.1
    ("http://10.1.2.3/hook", "private"),
    ("http://172.16.5.4/hook", "private"),
    ("http://192.168.0.1/hook", "private"),
    ("http://[::ffff:10.0.0.1]/hook", "private"),
    ("http://[fd00::1]/hook", "private"),
    ("http://[fec0::1]/hook", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[::ffff:169.254.169.254]/latest/meta-data/", "link-local"),
    ("http://[64:ff9b::a9fe:a9fe]/latest/meta-data/", "link-local"),  # NAT64 around it
    ("http://[fe80::1]/hook", "link-local"),
    ("http://[fe80::1%25eth0]/hook", "link-local"),
    ("http://224.0.0.1/hook", "multicast"),
    ("http://[ff02::1]/hook", "multicast"),
    ("http://0.0.0.0:8000/hook", "unspecified"),
    ("http://[::]/hook", "unspecified"),
    ("http://100.64.0.1/hook", "shared"),
    ("http://192.0.2.10/hook", "reserved"),
    ("http://240.0.0.1/hook", "reserved"),
    ("http://user:pass@crm.example.com/hook", "credentials"),
    ("http://user:pass@127.0.0.1/hook", "credentials"),  # allowed host, still no credentials
    ("http://evil.example\\@127.0.0.1/hook", "credentials"),
    ("ftp://crm.example.com/hook", "scheme"),
]


@pytest.mark.parametrize(("url", "rule"), REFUSED)
def test_guard_refuses_internal_addresses_and_credentials_naming_the_rule(url, rule):
    with pytest.raises(OutboundRefused) as refused:
        url_check(url, DEV, resolve="dns")
    assert refused.value.rule == rule
    assert f"(rule: {rule})" in str(refused.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://93.184.216.34/hook",  # a public address
        "https://[2606:4700::1111]/hook",
        "http://127.0.0.1:9/hook",  # the operator's allowlist names it
        "https://crm.does-not-resolve.invalid/hook",  # reaches nothing; checked again at send
    ],
)
def test_guard_accepts_public_and_allowed_hosts(url):
    url_check(url, DEV, resolve="dns")


def test_outside_dev_only_https_is_called():
    with pytest.raises(OutboundRefused) as refused:
        url_check("http://93.184.216.34/hook", PRODUCTION, resolve="dns")
    assert refused.value.rule == "https-only"
    url_check("https://93.184.216.34/hook", PRODUCTION, resolve="dns")


def test_an_allowlisted_host_allows_that_name_only_not_its_addresses():
    allowed = OutboundPolicy(allow_http=True, allowed_hosts=frozenset({"crm.internal"}))
    url_check("http://CRM.internal./hook", allowed, resolve="dns")
    with pytest.raises(OutboundRefused):
        url_check("http://localhost/hook", allowed, resolve="dns")


# --- at send time, through the network backend ---


def post(url: str) -> None:
    outbound_post(
        url, content=b"{}", headers={}, deadline_seconds=2.0, max_bytes=1024, dependency="crm"
    )


def double_port(crm) -> int:
    return urlsplit(crm.url).port


@pytest.mark.parametrize(
    ("host", "rule"),
    [
        ("localhost", "loopback"),
        ("[::ffff:127.0.0.1]", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("2130706433", "loopback"),
    ],
)
def test_send_refuses_a_host_that_reaches_loopback_before_connecting(crm, host, rule):
    """Each of these reaches the double (it listens on 127.0.0.1) if the call is made."""
    with pytest.raises(OutboundError) as failed:
        post(f"http://{host}:{double_port(crm)}/crm/ssrf")
    assert failed.value.permanent and failed.value.rule == rule
    assert not crm.calls("crm")


def test_send_refuses_a_name_a_resolver_points_at_loopback(crm, monkeypatch):
    """A public-looking name whose DNS answer is 127.0.0.1 (a test-only resolver)."""
    real_getaddrinfo = socket.getaddrinfo

    def resolver(host, *args, **kwargs):
        if host == "crm.rebind.example":
            return real_getaddrinfo("127.0.0.1", *args, **kwargs)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with pytest.raises(OutboundError) as failed:
        post(f"http://crm.rebind.example:{double_port(crm)}/crm/ssrf")
    assert failed.value.rule == "loopback"
    assert "127.0.0.1 (from 'crm.rebind.example')" in str(failed.value)
    assert not crm.calls("crm")


def test_send_connects_to_the_address_it_checked_not_to_a_second_answer(crm, monkeypatch):
    """DNS rebinding: the first answer is public, every later one is 127.0.0.1. A guard that
    checks one resolution and lets the connection resolve again would reach the double."""
    real_getaddrinfo = socket.getaddrinfo
    answers: list[str] = []

    def rebinding(host, *args, **kwargs):
        if host == "crm.rebind.example":
            address = "127.0.0.1" if answers else "1.1.1.1"
            answers.append(address)
            return real_getaddrinfo(address, *args, **kwargs)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with pytest.raises(OutboundError):  # 1.1.1.1 on the double's port: unreachable offline
        outbound_post(
            f"http://crm.rebind.example:{double_port(crm)}/crm/ssrf",
            content=b"{}",
            headers={},
            deadline_seconds=1.0,
            max_bytes=1024,
            dependency="crm",
        )
    assert answers == ["1.1.1.1"]  # resolved once
    assert not crm.calls("crm")


def test_send_refuses_a_redirect_and_never_follows_it(crm):
    internal = "/crm/internal"
    crm.configure(
        "crm", path="/crm/moved", redirect_to=f"http://127.0.0.1:{double_port(crm)}{internal}"
    )

    with pytest.raises(OutboundError) as failed:
        post(f"{crm.url}/crm/moved")

    assert failed.value.permanent and failed.value.rule == "redirect"
    assert "answered 302" in str(failed.value)
    assert not crm.calls("crm", path=internal)


@pytest.mark.django_db
def test_a_refused_url_dead_letters_the_tenants_leads_at_once_naming_the_rule(crm, crm_tenant):
    tenant = crm_tenant()
    tenant.crm_webhook_url = f"http://localhost:{double_port(crm)}/crm/ssrf"
    tenant.save(update_fields=["crm_webhook_url"])  # save() skips validation: an old row
    leads = [lead_for_crm_make(tenant) for _ in range(3)]

    outcome = leads_sync(lead_ids(leads))

    assert not outcome.retry and not outcome.later
    letters = DeadLetter.objects.filter(lead__in=leads)
    assert letters.count() == 3
    for letter in letters:
        assert "refused by the SSRF guard (rule: loopback)" in letter.error
        assert letter.attempts == 1
    assert not crm.calls("crm")
