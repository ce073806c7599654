"""API keys as users expect them: a recognisable prefix with a checksum, shown once, an optional
expiry, rotation with overlap (admin and `manage.py api_key`), last-used times written without
a write per request; keys made before the format keep working."""

import re
import secrets
import time
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from apps.intake.authentication import tenant_authenticate
from apps.intake.errors import ApiError
from apps.tenants import cache, usage
from apps.tenants.keys import api_key_generate, api_key_is_legacy, api_key_well_formed
from apps.tenants.models import ApiKey, api_key_digest
from apps.tenants.services import api_key_create, api_key_rotate, tenant_create
from leadflow.redis_conn import get_redis

pytestmark = pytest.mark.django_db
LIVE_KEY = re.compile(r"lf_live_[0-9A-Za-z]{38}")


@pytest.fixture(autouse=True)
def empty_tenant_cache():
    cache.clear()
    usage._noted.clear()
    get_redis().delete(usage.KEYS_LAST_USED_KEY, usage.KEYS_LAST_USED_WRITER_KEY)
    yield
    cache.clear()


def bearer(key: str) -> str:
    return f"Bearer {key}"


def an_address() -> str:
    return f"203.0.113.{secrets.randbelow(250) + 1}"


def refusal(key: str) -> ApiError:
    with pytest.raises(ApiError) as refused:
        tenant_authenticate(bearer(key), an_address())
    return refused.value


def run(*args) -> list[str]:
    out = StringIO()
    call_command("api_key", *args, stdout=out, stderr=StringIO())
    return out.getvalue().strip().splitlines()


# --- the format ---


def test_a_new_key_has_the_live_prefix_and_a_valid_checksum():
    keys = {api_key_generate() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert LIVE_KEY.fullmatch(key), key
        assert api_key_well_formed(key) and not api_key_is_legacy(key)


def test_a_changed_character_breaks_the_checksum():
    key = api_key_generate()
    for position in (8, 20, len(key) - 1):
        for replacement in "0aZ":
            changed = key[:position] + replacement + key[position + 1 :]
            if changed != key:
                assert not api_key_well_formed(changed), changed
    assert not api_key_well_formed(key[:-1])  # truncated
    assert not api_key_well_formed(key + "x")
    assert not api_key_well_formed("lf_live_" + "0" * 38)


def test_a_key_made_before_the_format_still_authenticates():
    tenant, _ = tenant_create("acme")
    legacy = "lf_" + secrets.token_urlsafe(32)  # what api_key_generate made before 0004
    ApiKey.objects.create(tenant=tenant, prefix=legacy[:10], digest=api_key_digest(legacy))
    assert api_key_well_formed(legacy) and api_key_is_legacy(legacy)
    assert tenant_authenticate(bearer(legacy), an_address()).tenant_name == "acme"


# --- expiry ---


def test_an_expired_key_is_refused_naming_its_expiry():
    tenant, _ = tenant_create("acme")
    key = api_key_create(tenant, expires_at=timezone.now() + timedelta(seconds=1))
    assert tenant_authenticate(bearer(key), an_address()).tenant_name == "acme"  # cached now

    time.sleep(1.1)  # no invalidation: the cached entry carries the expiry itself
    refused = refusal(key)
    assert refused.status_code == 401
    assert refused.code == "authentication_failed"
    assert "expired at" in refused.detail


def test_a_key_cannot_be_created_already_expired():
    tenant, _ = tenant_create("acme")
    with pytest.raises(ValueError, match="already past"):
        api_key_create(tenant, expires_at=timezone.now() - timedelta(seconds=1))


# --- rotation ---


def test_rotation_keeps_both_keys_working_for_the_overlap_then_only_the_new_one(
    django_capture_on_commit_callbacks,
):
    tenant, old_key = tenant_create("acme")
    old = ApiKey.objects.get(tenant=tenant)
    with django_capture_on_commit_callbacks(execute=True):
        new, new_key = api_key_rotate(old, overlap=timedelta(seconds=2))

    assert new.tenant == tenant and new.label == old.label and new.expires_at is None
    assert tenant_authenticate(bearer(old_key), an_address()).tenant_name == "acme"
    assert tenant_authenticate(bearer(new_key), an_address()).tenant_name == "acme"
    time.sleep(2.1)
    assert "expired at" in refusal(old_key).detail
    assert tenant_authenticate(bearer(new_key), an_address()).tenant_name == "acme"


def test_rotation_with_no_overlap_ends_the_old_key_at_once(django_capture_on_commit_callbacks):
    tenant, old_key = tenant_create("acme")
    with django_capture_on_commit_callbacks(execute=True):
        _, new_key = api_key_rotate(ApiKey.objects.get(tenant=tenant), overlap=timedelta(0))
    assert refusal(old_key).status_code == 401
    assert tenant_authenticate(bearer(new_key), an_address()).tenant_name == "acme"


def test_command_creates_lists_rotates_and_revokes(django_capture_on_commit_callbacks):
    tenant, first = tenant_create("acme")

    created = run("create", "acme", "--label", "zapier", "--expires-in", "90d")[-1]
    assert LIVE_KEY.fullmatch(created)
    made = ApiKey.objects.get(digest=api_key_digest(created))
    assert made.label == "zapier"
    assert timedelta(days=89) < made.expires_at - timezone.now() <= timedelta(days=90)

    listed = "\n".join(run("list", "acme"))
    assert made.prefix in listed and "zapier" in listed and "active" in listed

    with django_capture_on_commit_callbacks(execute=True):
        rotated = run("rotate", made.prefix, "--overlap", "1h")
    replacement = rotated[-1]
    assert LIVE_KEY.fullmatch(replacement) and replacement != created
    made.refresh_from_db()
    assert timedelta(minutes=59) < made.expires_at - timezone.now() <= timedelta(hours=1)
    assert tenant_authenticate(bearer(created), an_address()).tenant_name == "acme"

    with django_capture_on_commit_callbacks(execute=True):
        run("revoke", str(made.pk))
    assert refusal(created).detail == "unknown or revoked API key"
    assert tenant_authenticate(bearer(replacement), an_address()).tenant_name == "acme"
    assert tenant_authenticate(bearer(first), an_address()).tenant_name == "acme"


def test_command_refuses_what_it_cannot_do():
    tenant_create("acme")
    with pytest.raises(CommandError, match="no tenant named"):
        run("create", "globex")
    with pytest.raises(CommandError, match="no API key matches"):
        run("revoke", "lf_live_zzzz")
    with pytest.raises(CommandError, match="not a duration"):
        run("create", "acme", "--expires-in", "soon")


def test_admin_rotation_shows_the_new_key_once_and_the_old_one_expires(admin_client):
    tenant, old_key = tenant_create("acme")
    old = ApiKey.objects.get(tenant=tenant)

    response = admin_client.post(
        reverse("admin:tenants_apikey_changelist"),
        {"action": "rotate_keys", "_selected_action": [old.pk]},
        follow=True,
    )

    shown = [str(message) for message in response.context["messages"]]
    [new_key] = [LIVE_KEY.search(text).group() for text in shown if LIVE_KEY.search(text)]
    old.refresh_from_db()
    assert timedelta(hours=23) < old.expires_at - timezone.now() <= timedelta(hours=24)
    assert ApiKey.objects.get(digest=api_key_digest(new_key)).expires_at is None
    listing = admin_client.get(reverse("admin:tenants_apikey_changelist")).content.decode()
    assert new_key not in listing and old_key not in listing  # never shown again


def test_admin_sets_an_expiry_on_a_keys_page(admin_client, django_capture_on_commit_callbacks):
    tenant, raw_key = tenant_create("acme")
    key = ApiKey.objects.get(tenant=tenant)
    assert tenant_authenticate(bearer(raw_key), an_address())  # cached in this process
    soon = timezone.now() - timedelta(seconds=1)

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:tenants_apikey_change", args=[key.pk]),
            {
                "label": "initial",
                "expires_at_0": f"{soon:%Y-%m-%d}",
                "expires_at_1": f"{soon:%H:%M:%S}",
            },
        )

    assert response.status_code == 302, response.content.decode()[:2000]
    key.refresh_from_db()
    assert key.expires_at is not None
    assert "expired at" in refusal(raw_key).detail


# --- last used ---


@pytest.mark.django_db(transaction=True)
def test_requests_note_the_key_and_one_update_writes_it_later():
    tenant, raw_key = tenant_create("acme")
    key = ApiKey.objects.get(tenant=tenant)
    tenant_authenticate(bearer(raw_key), an_address())  # loads the key

    with CaptureQueriesContext(connection) as queries:
        for _ in range(50):
            tenant_authenticate(bearer(raw_key), an_address())
    assert len(queries) == 0  # no write, no read per request

    # The tenant cache's thread moves the notes to Redis within a second, and a process writes
    # them every LEADFLOW_API_KEY_LAST_USED_WRITE_SECONDS (1 in the tests).
    wait_for_last_used(key)
    assert key.last_used_at is not None
    assert abs((timezone.now() - key.last_used_at).total_seconds()) < 10


def wait_for_last_used(key: ApiKey, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while key.last_used_at is None and time.monotonic() < deadline:
        time.sleep(0.2)
        key.refresh_from_db()


@pytest.mark.django_db(transaction=True)
def test_last_used_waits_while_another_process_holds_the_writers_turn():
    tenant, _ = tenant_create("acme")
    key = ApiKey.objects.get(tenant=tenant)
    client = get_redis()
    client.set(usage.KEYS_LAST_USED_WRITER_KEY, "another process", ex=30)
    client.hset(usage.KEYS_LAST_USED_KEY, key.pk, time.time())

    assert usage.last_used_write() == 0
    time.sleep(1.5)  # the cache thread's rounds meanwhile (every process's): none writes
    key.refresh_from_db()
    assert key.last_used_at is None
    assert client.hexists(usage.KEYS_LAST_USED_KEY, key.pk)  # kept for the writer

    client.delete(usage.KEYS_LAST_USED_WRITER_KEY)
    wait_for_last_used(key)  # the turn is free: the next round writes it
    assert key.last_used_at is not None
