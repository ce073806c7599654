"""A tenant's webhook settings: URLs the SSRF guard refuses are refused when saved (admin,
tenant_create, create_tenant), and webhook secrets are mandatory, shown once, rotated with an
overlap from admin and manage.py."""

import importlib
from io import StringIO

import pytest
from django.apps import apps as django_apps
from django.core.management import CommandError, call_command
from django.urls import reverse

from apps.tenants.models import Tenant, WebhookSecret, webhook_signing_secrets
from apps.tenants.services import (
    TenantError,
    tenant_create,
    webhook_secret_create,
    webhook_secret_revoke,
    webhook_secret_revoke_older,
)

pytestmark = pytest.mark.django_db

REFUSED_URLS = [
    ("http://127.0.0.2:8000/hook", "loopback"),
    ("http://localhost:8000/hook", "loopback"),
    ("http://[::ffff:127.0.0.1]:8000/hook", "loopback"),
    ("http://10.0.0.5/hook", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://0.0.0.0:8000/hook", "unspecified"),
    ("http://user:pass@crm.example.com/hook", "credentials"),
]
WHSEC_LENGTH = len("whsec_") + 44  # base64 of 32 bytes


def run_command(*args) -> list[str]:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue().strip().splitlines()


def tenant_form(**fields) -> dict:
    """The admin's tenant form as a browser posts it (no inline rows)."""
    return {
        "name": "acme",
        "is_active": "on",
        "crm_webhook_url": "",
        "rate_limit_per_second": "1000",
        "per_ip_rate_limit_per_second": "",
        "critical_capacity": "100",
        "critical_refill_per_second": "10",
        "hourly_budget": "1000000",
        "retention_hours": "48",
        **{
            f"{prefix}-{count}": "0"
            for prefix in ("api_keys", "webhook_secrets")
            for count in ("TOTAL_FORMS", "INITIAL_FORMS")
        },
        **fields,
    }


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


# --- the SSRF guard at save time ---


@pytest.mark.parametrize(("url", "rule"), REFUSED_URLS)
def test_admin_refuses_a_webhook_url_into_leadflows_network(admin_client, url, rule):
    response = admin_client.post(
        reverse("admin:tenants_tenant_add"), tenant_form(crm_webhook_url=url)
    )

    assert response.status_code == 200  # the form again, with its error
    errors = response.context["adminform"].form.errors["crm_webhook_url"]
    assert any(f"refused by the SSRF guard (rule: {rule})" in error for error in errors), errors
    assert not Tenant.objects.exists()


def test_admin_refuses_changing_an_existing_tenants_url_to_the_metadata_address(admin_client):
    tenant, _ = tenant_create("acme", crm_webhook_url="http://127.0.0.1:9/crm/hook")

    response = admin_client.post(
        reverse("admin:tenants_tenant_change", args=[tenant.pk]),
        tenant_form(crm_webhook_url="http://169.254.169.254/latest/meta-data/"),
    )

    assert response.status_code == 200
    assert "rule: link-local" in str(response.context["adminform"].form.errors)
    tenant.refresh_from_db()
    assert tenant.crm_webhook_url == "http://127.0.0.1:9/crm/hook"


@pytest.mark.parametrize(("url", "rule"), REFUSED_URLS)
def test_tenant_create_refuses_a_webhook_url_into_leadflows_network(url, rule):
    with pytest.raises(TenantError, match=rf"crm_webhook_url: .*\(rule: {rule}\)"):
        tenant_create("acme", crm_webhook_url=url)
    assert not Tenant.objects.exists()


def test_create_tenant_command_refuses_the_metadata_address():
    with pytest.raises(CommandError, match=r"rule: link-local"):
        run_command("create_tenant", "acme", "--crm-webhook-url", "http://169.254.169.254/")
    assert not Tenant.objects.exists()


def test_outside_dev_a_plain_http_url_is_refused(settings):
    settings.OUTBOUND_ALLOW_HTTP = False
    with pytest.raises(TenantError, match=r"rule: https-only"):
        tenant_create("acme", crm_webhook_url="http://127.0.0.1:9/crm/hook")


# --- webhook secrets: mandatory, shown once, rotated with an overlap ---


def test_admin_gives_a_new_tenant_a_secret_and_shows_it_once(admin_client):
    response = admin_client.post(
        reverse("admin:tenants_tenant_add"),
        tenant_form(crm_webhook_url="http://127.0.0.1:9/crm/hook"),
        follow=True,
    )

    tenant = Tenant.objects.get(name="acme")
    [secret] = webhook_signing_secrets(tenant)
    assert len(secret) == WHSEC_LENGTH
    assert any(secret in message for message in messages_of(response))
    page = admin_client.get(reverse("admin:tenants_tenant_change", args=[tenant.pk]))
    assert secret[:12] in page.content.decode()  # recognisable by its first characters
    assert secret not in page.content.decode()  # never shown again


def test_create_tenant_command_prints_the_secret_once_and_the_key_last():
    lines = run_command("create_tenant", "acme")

    [secret] = webhook_signing_secrets(Tenant.objects.get(name="acme"))
    assert secret in lines
    assert lines[-1].startswith("lf_")  # scripts take the key with `tail -n 1`


def test_a_rotation_keeps_two_secrets_at_most_and_one_at_least():
    tenant, _ = tenant_create("acme")
    [first] = webhook_signing_secrets(tenant)

    second = webhook_secret_create(tenant)
    assert webhook_signing_secrets(tenant) == [second, first]  # both sign, newest first
    with pytest.raises(TenantError, match="revoke the older one first"):
        webhook_secret_create(tenant)

    revoked = webhook_secret_revoke_older(tenant)
    assert revoked.secret == first
    assert webhook_signing_secrets(tenant) == [second]
    with pytest.raises(TenantError, match="only active webhook secret"):
        webhook_secret_revoke(WebhookSecret.objects.get(secret=second))
    assert webhook_signing_secrets(tenant) == [second]


def test_webhook_secrets_command_rotates_create_then_revoke():
    tenant, _ = tenant_create("acme")
    [first] = webhook_signing_secrets(tenant)

    new = run_command("webhook_secrets", "create", "acme")[-1]
    assert webhook_signing_secrets(tenant) == [new, first]
    listed = run_command("webhook_secrets", "list", "acme")
    assert len(listed) == 2 and all("active" in line for line in listed)
    assert not any(first in line or new in line for line in listed)  # prefixes only

    run_command("webhook_secrets", "revoke", "acme")
    assert webhook_signing_secrets(tenant) == [new]
    with pytest.raises(CommandError, match="only active webhook secret"):
        run_command("webhook_secrets", "revoke", "acme", "--prefix", new[:12])


def test_admin_actions_rotate_a_tenants_secret(admin_client):
    tenant, _ = tenant_create("acme")
    [first] = webhook_signing_secrets(tenant)
    changelist = reverse("admin:tenants_tenant_changelist")

    created = admin_client.post(
        changelist,
        {"action": "create_webhook_secret", "_selected_action": [tenant.pk]},
        follow=True,
    )
    [new, _] = webhook_signing_secrets(tenant)
    assert any(new in message for message in messages_of(created))

    admin_client.post(
        changelist,
        {"action": "revoke_older_webhook_secret", "_selected_action": [tenant.pk]},
        follow=True,
    )
    assert webhook_signing_secrets(tenant) == [new]
    refused = admin_client.post(
        changelist,
        {"action": "revoke_older_webhook_secret", "_selected_action": [tenant.pk]},
        follow=True,
    )
    assert any("only active webhook secret" in message for message in messages_of(refused))
    assert first not in str(messages_of(refused))


def test_the_migration_gives_every_tenant_without_one_an_active_secret():
    tenant, _ = tenant_create("acme")
    WebhookSecret.objects.filter(tenant=tenant).delete()  # as before the migration
    kept, _ = tenant_create("globex")
    [globex_secret] = webhook_signing_secrets(kept)
    migration = importlib.import_module("apps.tenants.migrations.0003_webhook_secrets")

    migration.secrets_generate(django_apps, schema_editor=None)

    [secret] = webhook_signing_secrets(tenant)
    assert secret.startswith("whsec_") and len(secret) == WHSEC_LENGTH
    assert webhook_signing_secrets(kept) == [globex_secret]  # one it had is kept alone
