"""The short form of `make chaos` runs once per session; each experiment is its own test."""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from bench.launch import die_with_parent
from chaos.proc import ROOT

# Stop a harness that hangs: the short form takes ~7 minutes on a loaded 2-core machine.
HARNESS_TIMEOUT_SECONDS = 20 * 60


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "chaos: the short form of `make chaos` (deselect with -m 'not chaos')"
    )


@pytest.fixture(scope="session")
def chaos_report() -> dict:
    """report.json of `python -m chaos --short` on servers of its own (it kills them, and sets
    maxmemory on its Redis: never on the servers the other tests use)."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = ROOT / "chaos" / "results" / f"{stamp}-short"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["CHAOS_COMMAND"] = "pytest tests/chaos (python -m chaos --short --services private)"
    completed = subprocess.run(
        [sys.executable, "-m", "chaos", "--short", "--services", "private", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=HARNESS_TIMEOUT_SECONDS,
        preexec_fn=die_with_parent,  # and all it started with it (it dies with its parent too)
    )
    report_path = out / "report.json"
    if completed.returncode not in (0, 1) or not report_path.exists():
        pytest.fail(
            f"the chaos harness failed (exit {completed.returncode}); see {out}/chaos.log\n"
            f"{completed.stdout[-4000:]}\n{completed.stderr[-4000:]}"
        )
    report = json.loads(report_path.read_text())
    report["_path"] = str(out / "report.md")
    return report
