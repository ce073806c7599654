"""docker-compose.yml, hardened: every secret required (no default, no admin:admin), Redis with a
password that every client sends, the operator listener published on loopback beside the API,
app containers read-only and unprivileged; `make compose-env` writes the secrets it requires."""

import os
import re
import stat
import subprocess

import pytest
import yaml

from tests.deploy.procfile import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
SECRETS = (
    "DJANGO_SECRET_KEY",
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
    "FLOWER_BASIC_AUTH",
    "GRAFANA_ADMIN_PASSWORD",
)
APP_SERVICES = ("migrate", "api", "pool-a", "pool-b", "pool-c", "control", "flower")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def test_every_secret_is_required_with_no_default():
    text = COMPOSE_FILE.read_text()
    for name in SECRETS:
        uses = re.findall(r"\$\{" + name + r"(:?[-?=+]?)", text)
        assert uses, f"{name} is not used"
        assert set(uses) == {":?"}, f"{name} must be ${{{name}:?…}} everywhere (no default)"
    assert "admin:admin" not in text and "dev-only-not-secret" not in text


def test_redis_asks_for_a_password_and_every_client_sends_it(compose):
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--requirepass") + 1].startswith("${REDIS_PASSWORD:?")
    assert redis["environment"]["REDISCLI_AUTH"].startswith("${REDIS_PASSWORD:?")  # healthcheck
    assert "ports" not in redis
    url = compose["x-app"]["environment"]["REDIS_URL"]
    assert url.startswith("redis://:${REDIS_PASSWORD:?") and url.endswith("@redis:6379/0")
    assert "CELERY_BROKER_URL" not in compose["x-app"]["environment"]  # follows REDIS_URL


def test_the_operator_listener_is_bound_and_published_on_loopback_only(compose):
    api = compose["services"]["api"]
    assert "-b 0.0.0.0:8000 -b 0.0.0.0:8001" in api["command"]
    assert api["ports"] == ["127.0.0.1:8000:8000", "127.0.0.1:8001:8001"]


def test_app_containers_are_read_only_and_unprivileged(compose):
    app = compose["x-app"]
    assert app["read_only"] is True
    assert app["tmpfs"] == ["/tmp"]
    assert app["cap_drop"] == ["ALL"]
    assert app["security_opt"] == ["no-new-privileges:true"]
    for name in APP_SERVICES:
        service = compose["services"][name]
        for key in ("read_only", "tmpfs", "cap_drop", "security_opt"):
            assert service[key] == app[key], f"{name} overrides {key}"
    assert "USER 10001:10001" in (ROOT / "Dockerfile").read_text()


def test_flower_is_configured_in_the_image():
    """Flower reads flowerconfig.py from its working directory: the image's /app."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^COPY .*\bflowerconfig\.py\b.* \./$", dockerfile, re.MULTILINE)
    assert "WORKDIR /app" in dockerfile


def test_make_compose_env_writes_the_missing_secrets_once(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("POSTGRES_PASSWORD=mine\n")
    environment = {key: value for key, value in os.environ.items() if key not in SECRETS}
    run = ["make", "-s", "compose-env", f"ENV_FILE={env_file}"]
    subprocess.run(run, cwd=ROOT, env=environment, check=True, capture_output=True, timeout=60)
    first = env_file.read_text()
    values = dict(line.split("=", 1) for line in first.splitlines())
    assert set(values) == set(SECRETS)
    assert values["POSTGRES_PASSWORD"] == "mine"  # kept
    assert len(values["DJANGO_SECRET_KEY"]) >= 50
    assert re.fullmatch(r"leadflow:\S{16,}", values["FLOWER_BASIC_AUTH"])
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600

    subprocess.run(run, cwd=ROOT, env=environment, check=True, capture_output=True, timeout=60)
    assert env_file.read_text() == first  # nothing replaced
