"""Redis with a password (compose: requirepass) or an ACL user (deploy/README.md), against real
redis-servers started here: the durability checks still read its settings and never print the
password, the API admits a lead through it, and a worker's liveness probe reaches the broker."""

import os
import secrets
import subprocess
import sys
import uuid
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import redis
from django.conf import settings as django_settings
from django.core import checks

from leadflow.redis_checks import TAG, durability_findings, server_settings
from tests.deploy.test_redis_checks import redis_executable
from tests.deploy.test_supervise import wait_until
from tests.live.api import auth
from tests.live.stack import ROOT, _die_with_parent, free_port
from tests.outage.api_process import api_server

PASSWORD = secrets.token_hex(16)
# The ACL deploy/README.md recommends: everything but the dangerous commands, except the two
# reads the durability checks need (INFO; CONFIG GET, whose refusal they tolerate).
ACL_RULES = ["on", f">{PASSWORD}", "~*", "&*", "+@all", "-@dangerous", "+info", "+config|get"]


@pytest.fixture(params=["requirepass", "acl"])
def protected_redis(request, tmp_path):
    """A durable redis-server that refuses clients without credentials; its URL with them."""
    port = free_port()
    argv = [redis_executable(), "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    argv += ["--dir", str(tmp_path), "--appendonly", "yes", "--maxmemory-policy", "noeviction"]
    if request.param == "requirepass":
        argv += ["--requirepass", PASSWORD]
        url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    else:
        argv += ["--user", "default", "off", "--user", "leadflow", *ACL_RULES]
        url = f"redis://leadflow:{PASSWORD}@127.0.0.1:{port}/0"
    process = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    client = redis.Redis.from_url(url, socket_timeout=1)
    wait_until(lambda: _pings(client), 15, "the protected redis-server to answer")
    client.close()
    yield url
    process.kill()
    process.wait(timeout=10)


def _pings(client: redis.Redis) -> bool:
    try:
        return client.ping()
    except redis.ConnectionError:
        return False


def database_url_of_the_tests() -> str:
    name = django_settings.DATABASES["default"]["NAME"]
    return urlunsplit(urlsplit(os.environ["DATABASE_URL"])._replace(path=f"/{name}"))


def without_credentials(url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"{parts.hostname}:{parts.port}").geturl()


def test_clients_without_credentials_are_refused(protected_redis):
    client = redis.Redis.from_url(without_credentials(protected_redis), socket_timeout=1)
    with pytest.raises((redis.AuthenticationError, redis.ResponseError)):
        client.set("lf:test:intruder", 1)


def test_durability_checks_read_the_settings_with_credentials(protected_redis, settings):
    found = server_settings(protected_redis)
    assert found["appendonly"] == "yes" and found["maxmemory_policy"] == "noeviction"
    settings.REDIS_URL = settings.CELERY_BROKER_URL = protected_redis
    settings.REDIS_CHECKS = "strict"
    problems, unanswered = durability_findings()
    assert unanswered == {} and not any(problems.values())
    assert checks.run_checks(tags=[TAG], include_deployment_checks=True) == []


def test_a_refused_check_names_the_server_never_the_password(protected_redis, settings):
    wrong = protected_redis.replace(PASSWORD, "not-the-password")
    settings.REDIS_URL = settings.CELERY_BROKER_URL = wrong
    settings.REDIS_CHECKS = "strict"
    _, unanswered = durability_findings()
    assert "127.0.0.1" in unanswered["redis"]
    assert "not-the-password" not in unanswered["redis"] and PASSWORD not in unanswered["redis"]


@pytest.mark.django_db(transaction=True)
def test_the_api_admits_a_lead_through_a_protected_redis(
    protected_redis, django_db_setup, make_tenant, tmp_path
):
    _, key = make_tenant("redis-auth")
    env = {
        **os.environ,
        "DATABASE_URL": database_url_of_the_tests(),
        "REDIS_URL": protected_redis,
        "LEADFLOW_REDIS_CHECKS": "strict",  # it must pass them, with the credentials
        "LEADFLOW_OPERATOR_PORT": str(free_port()),
    }
    with (
        api_server(env, tmp_path / "api.log", workers=1) as api,
        httpx.Client(base_url=api.url, timeout=10) as http,
    ):
        body = {"email": f"{uuid.uuid4().hex[:10]}@example.com", "priority": "normal"}
        response = http.post("/api/v1/leads", json=body, headers=auth(key))
        assert response.status_code == 202, response.text + api.log()[-2000:]
        assert http.get("/readyz").json()["status"] == "ready"
        assert PASSWORD not in api.log()
    inboxes = redis.Redis.from_url(protected_redis)
    assert any(inboxes.scan_iter("*inbox*")), "the lead is in the protected Redis"


def test_a_workers_probe_reaches_the_broker_with_credentials(protected_redis):
    env = {**os.environ, "REDIS_URL": protected_redis}
    env.pop("CELERY_BROKER_URL", None)
    probe = [sys.executable, "-m", "apps.health.worker_probe", "a", "--timeout", "1"]
    result = subprocess.run(probe, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    # the broker answered (authenticated), and no worker of this host did
    assert result.returncode == 1, result.stdout + result.stderr
    assert "did not answer" in result.stderr
