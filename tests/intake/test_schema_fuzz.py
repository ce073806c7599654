"""Schemathesis against the live API (gunicorn: the hot path for the POSTs, DRF for the GET and
the DELETE), from the schema the API serves: its examples, boundary cases (coverage), generated
requests valid and invalid (positive and negative modes), and a stateful run that follows the
schema's links from a POST's trace id to the GET. Every answer must be no 5xx and conform to the
schema: a documented status, content type, headers and body (the described objects are
closed, so an undocumented key fails too).

Run as schemathesis's own CLI in a subprocess, with a fixed seed (the same cases every run)
and bounded examples, so it takes a minute or two (LEADFLOW_FUZZ_EXAMPLES and
LEADFLOW_FUZZ_SEED run a longer or different hunt). The tenant has a low request rate, so
429s come and must conform too; the probes without a key meet the per-address limit.
What it found is kept as plain tests in tests/intake/test_schema_findings.py.
"""

import json
import os
import random
import subprocess
import sys
from collections import Counter

import pytest

pytestmark = pytest.mark.django_db(transaction=True)

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "unsupported_method",
)
# A deeper hunt: LEADFLOW_FUZZ_EXAMPLES=2000 LEADFLOW_FUZZ_SEED=7 (make test PYTEST_ARGS=...).
MAX_EXAMPLES = int(os.environ.get("LEADFLOW_FUZZ_EXAMPLES", "200"))  # per operation: CI time
SEED = int(os.environ.get("LEADFLOW_FUZZ_SEED", "20261201"))


def test_schemathesis_finds_no_5xx_and_every_answer_conforms(live_stack, make_tenant, tmp_path):
    _, key = make_tenant("fuzz", rate_limit_per_second=20)
    address = f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"
    argv = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{live_stack.api_url}/api/schema/",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--suppress-health-check",
        "all",
        "--header",
        f"Authorization: Bearer {key}",
        "--header",
        f"X-Forwarded-For: {address}",
        "--report",
        "har",
        "--report-har-path",
        str(tmp_path / "answers.har"),
    ]
    env = {**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"}
    # In tmp_path: Hypothesis keeps its example database in the working directory.
    run = subprocess.run(
        argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    output = run.stdout + run.stderr
    print(output)  # the run's summary: operations, phases, cases sent
    assert run.returncode == 0, output[-30_000:]
    assert "No issues found" in output, output[-5_000:]
    # What was answered: accepted leads, duplicates, refusals of each kind, the GET's 200 and
    # 404 (and, as the tenant's limit bites, 429s), each one checked against the schema.
    answers = Counter(
        (entry["request"]["method"], entry["response"]["status"])
        for entry in json.loads((tmp_path / "answers.har").read_text())["log"]["entries"]
    )
    print(sorted(answers.items()))
    expected = {("POST", 202), ("POST", 200), ("POST", 400), ("POST", 429)}
    expected |= {("GET", 200), ("GET", 404), ("DELETE", 200), ("DELETE", 400)}
    assert expected <= set(answers), answers
