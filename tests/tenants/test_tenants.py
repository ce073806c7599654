"""Tenant commands and admin: keys printed once, stored hashed, revocable at once."""

import re
import stat
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from apps.tenants import cache
from apps.tenants.models import ApiKey, Tenant
from apps.tenants.services import api_key_revoke, tenant_create

KEY_PATTERN = re.compile(r"lf_live_[A-Za-z0-9]{38}")

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def empty_tenant_cache():
    cache.clear()
    yield
    cache.clear()


def run_command(*args) -> list[str]:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue().strip().splitlines()


def test_create_tenant_prints_a_working_key_alone_on_its_last_line():
    lines = run_command("create_tenant", "acme")

    raw_key = lines[-1]
    assert KEY_PATTERN.fullmatch(raw_key)
    assert len(lines) >= 2, "a human line comes before the key"
    auth = cache.tenant_for_key(raw_key)
    assert auth is not None
    assert auth.tenant_name == "acme"


def test_create_tenant_stores_the_key_hashed_not_in_clear():
    raw_key = run_command("create_tenant", "acme")[-1]

    assert not ApiKey.objects.filter(digest=raw_key).exists()
    assert ApiKey.objects.get(tenant__name="acme").prefix == raw_key[:12]  # lf_live_ + 4


def test_create_tenant_refuses_an_existing_name():
    run_command("create_tenant", "acme")

    with pytest.raises(CommandError, match="already exists"):
        run_command("create_tenant", "acme")
    assert Tenant.objects.filter(name="acme").count() == 1


def test_create_tenant_refuses_an_empty_name():
    with pytest.raises(CommandError, match="needs a name"):
        run_command("create_tenant", "   ")
    assert not Tenant.objects.exists()


def test_demo_tenant_prints_the_same_working_key_on_every_run(tmp_path):
    key_file = tmp_path / "demo_api_key"

    first = run_command("demo_tenant", "--key-file", str(key_file))[-1]
    second = run_command("demo_tenant", "--key-file", str(key_file))[-1]

    assert first == second
    assert cache.tenant_for_key(first).tenant_name == "demo"
    assert Tenant.objects.filter(name="demo").count() == 1
    assert ApiKey.objects.filter(tenant__name="demo").count() == 1
    assert key_file.read_text().strip() == first
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_demo_tenant_replaces_a_key_that_no_longer_authenticates(
    tmp_path, django_capture_on_commit_callbacks
):
    key_file = tmp_path / "demo_api_key"
    old_key = run_command("demo_tenant", "--key-file", str(key_file))[-1]
    with django_capture_on_commit_callbacks(execute=True):
        for key in ApiKey.objects.filter(tenant__name="demo"):
            api_key_revoke(key)

    new_key = run_command("demo_tenant", "--key-file", str(key_file))[-1]

    assert new_key != old_key
    assert cache.tenant_for_key(new_key).tenant_name == "demo"
    assert key_file.read_text().strip() == new_key


def test_demo_tenant_makes_a_new_key_when_the_key_file_is_missing(tmp_path):
    key_file = tmp_path / "demo_api_key"
    old_key = run_command("demo_tenant", "--key-file", str(key_file))[-1]
    key_file.unlink()

    new_key = run_command("demo_tenant", "--key-file", str(key_file))[-1]

    assert new_key != old_key
    assert cache.tenant_for_key(new_key).tenant_name == "demo"


def test_revoked_key_stops_authenticating_at_once(django_capture_on_commit_callbacks):
    tenant, raw_key = tenant_create("acme")
    assert cache.tenant_for_key(raw_key) is not None  # now cached in this process

    with django_capture_on_commit_callbacks(execute=True):
        api_key_revoke(ApiKey.objects.get(tenant=tenant))

    assert cache.tenant_for_key(raw_key) is None


def test_admin_action_creates_a_key_and_shows_it_once(admin_client):
    tenant, _ = tenant_create("acme")

    response = admin_client.post(
        reverse("admin:tenants_tenant_changelist"),
        {"action": "create_api_key", "_selected_action": [tenant.pk]},
        follow=True,
    )

    assert response.status_code == 200
    shown = [str(message) for message in response.context["messages"]]
    assert len(shown) == 1
    raw_key = KEY_PATTERN.search(shown[0]).group()
    assert ApiKey.objects.filter(tenant=tenant).count() == 2
    assert cache.tenant_for_key(raw_key).tenant_name == "acme"


def test_admin_action_revokes_the_selected_keys(admin_client, django_capture_on_commit_callbacks):
    tenant, raw_key = tenant_create("acme")
    key = ApiKey.objects.get(tenant=tenant)

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:tenants_apikey_changelist"),
            {"action": "revoke_keys", "_selected_action": [key.pk]},
            follow=True,
        )

    assert response.status_code == 200
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert cache.tenant_for_key(raw_key) is None


def test_admin_tenant_list_counts_only_active_keys(admin_client):
    tenant, _ = tenant_create("acme")
    api_key_revoke(ApiKey.objects.get(tenant=tenant))
    tenant_create("globex")

    response = admin_client.get(reverse("admin:tenants_tenant_changelist"))

    assert response.status_code == 200
    counts = {t.name: t._active_key_count for t in response.context["cl"].result_list}
    assert counts == {"acme": 0, "globex": 1}
