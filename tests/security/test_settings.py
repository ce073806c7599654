"""Production settings: no start without a real DJANGO_SECRET_KEY (dev keeps a dev-only one),
`manage.py check --deploy` passes as CI runs it, the old leftmost-X-Forwarded-For switch is
refused. Each case is a fresh process, as settings are read once."""

import os
import secrets
import subprocess
import sys

import pytest

from tests.live.stack import ROOT

SHOW = "from django.conf import settings as s; print(s.{})"


def production_env(**overrides: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DJANGO_")}
    env.pop("LEADFLOW_DEV", None)
    env.update(
        DATABASE_URL="postgresql://leadflow@db.example.internal:5432/leadflow",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        LEADFLOW_REDIS_CHECKS="off",  # Redis's durability has its own tests (tests/deploy)
    )
    env.update(overrides)
    return {key: value for key, value in env.items() if value is not None}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def setting(name: str, env: dict[str, str]) -> str:
    code = f"import django; django.setup(); {SHOW.format(name)}"
    env = {**env, "DJANGO_SETTINGS_MODULE": "leadflow.settings"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_check_deploy_passes_with_production_settings():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize("secret_key", [None, "", "replace-me", "x" * 60])
def test_production_refuses_to_start_without_a_real_secret_key(secret_key):
    env = production_env(DJANGO_SECRET_KEY=secret_key)
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set to at least 50 random characters" in result.stderr


def test_dev_keeps_a_dev_only_key():
    env = production_env(DJANGO_SECRET_KEY=None, LEADFLOW_DEV="true")
    assert manage("check", env=env).returncode == 0
    assert setting("SECRET_KEY", env) == "dev-only-not-secret"
    assert setting("SESSION_COOKIE_SECURE", env) == "False"  # http://127.0.0.1 under make run


def test_the_embedded_database_is_dev_and_a_database_url_is_not():
    embedded = production_env(DATABASE_URL=None, DJANGO_SECRET_KEY=None)
    assert setting("DEV", embedded) == "True"
    assert setting("DEV", production_env()) == "False"


def test_production_cookies_and_hsts():
    env = production_env()
    assert setting("SESSION_COOKIE_SECURE", env) == "True"
    assert setting("CSRF_COOKIE_SECURE", env) == "True"
    assert int(setting("SECURE_HSTS_SECONDS", env)) >= 31_536_000
    assert setting("SECURE_PROXY_SSL_HEADER", production_env(LEADFLOW_TRUSTED_PROXIES="1")) == (
        "('HTTP_X_FORWARDED_PROTO', 'https')"
    )


def test_the_leftmost_forwarded_for_switch_is_refused():
    result = manage("check", env=production_env(LEADFLOW_TRUST_X_FORWARDED_FOR="true"))
    assert result.returncode != 0
    assert "LEADFLOW_TRUSTED_PROXIES" in result.stderr
