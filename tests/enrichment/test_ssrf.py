"""The SSRF guard on the AI provider's URL (a setting): refused at start, and at send time."""

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from apps.enrichment.providers import HttpProvider, ProviderError

ROOT = Path(__file__).resolve().parents[2]


def settings_loaded(**env: str) -> subprocess.CompletedProcess:
    """A new process loading LeadFlow's settings, as every process does when it starts."""
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "leadflow.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://169.254.169.254/v1", "link-local"),
        ("http://localhost:8080", "loopback"),
        ("http://10.0.0.7:8000", "private"),
        ("http://sk-key@api.example.com", "credentials"),
    ],
)
def test_a_process_refuses_to_start_with_an_ai_url_into_leadflows_network(url, rule):
    started = settings_loaded(LEADFLOW_AI_URL=url)

    assert started.returncode != 0
    assert "ImproperlyConfigured" in started.stderr
    assert f"LEADFLOW_AI_URL {url!r}: refused by the SSRF guard (rule: {rule})" in started.stderr


def test_outside_dev_a_process_refuses_an_http_ai_url():
    started = settings_loaded(
        LEADFLOW_AI_URL="http://api.example.com", LEADFLOW_OUTBOUND_ALLOW_HTTP="false"
    )
    assert "rule: https-only" in started.stderr
    assert settings_loaded(LEADFLOW_AI_URL="https://api.example.com").returncode == 0


@pytest.mark.parametrize(("host", "rule"), [("localhost", "loopback"), ("0.0.0.0", "unspecified")])
def test_a_call_to_an_ai_url_reaching_loopback_is_refused_and_never_made(ai, host, rule):
    """Set at run time (past the start check): the double on 127.0.0.1 would answer it."""
    provider = HttpProvider(f"http://{host}:{urlsplit(ai.url).port}", "m", "", 2.0)

    with pytest.raises(ProviderError, match=rf"SSRF guard \(rule: {rule}\)"):
        provider.enrich_domains(["a.example"])
    assert not ai.calls("ai")
