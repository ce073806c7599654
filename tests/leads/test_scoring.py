"""Scoring rules: the compiled verdict gives what the rules say, rule by rule; pool A checks
them when it starts (a real worker refuses a broken file, naming the rule) and its children
score with the rules it checked, whatever happens to the file after."""

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from apps.leads.models import Lead
from apps.leads.scoring import ScoringConfigError, scoring_current, scoring_load
from tests.deploy.procfile import argv_with_defaults, procfile, with_option
from tests.live.api import auth, wait_until
from tests.live.stack import ROOT, _die_with_parent, free_port


def _score_by_the_rules(scoring, lead: dict) -> tuple[int, bool, list[str]]:
    """The rules read one at a time (Rule.holds), as the config file describes them."""
    total, reasons = scoring.base, []
    for rule in scoring.rules:
        if rule.holds(lead):
            total += rule.points
            reasons.append(rule.name)
    total = max(0, min(100, total))
    return total, total >= scoring.threshold, reasons


def test_verdict_matches_the_rules_one_by_one_on_every_combination():
    scoring = scoring_current()
    values = {
        "email": ["ada@analytical.io", "test@analytical.io", "NoReply+x@gmail.com", ""],
        "email_domain": ["analytical.io", "gmail.com", " GMAIL.com ", ""],
        "phone": ["+442079460958", "", "  "],
        "company": ["Analytical Engines", ""],
        "source": ["google_ads", "Partner ", "newsletter", ""],
        "campaign_id": ["spring", ""],
        "region": ["gb", "US", "jp", ""],
        "tier": ["critical", "normal", "low"],
    }
    names = list(values)
    for combination in itertools.product(*values.values()):
        lead = dict(zip(names, combination, strict=True))
        verdict = scoring.verdict(lead)
        assert (verdict.score, verdict.qualified, list(verdict.reasons)) == _score_by_the_rules(
            scoring, lead
        ), lead
        assert scoring.score(lead) == _score_by_the_rules(scoring, lead)


def test_score_is_clamped_and_qualifies_at_the_threshold(tmp_path: Path):
    path = tmp_path / "scoring.yaml"
    path.write_text(
        "version: 1\nbase: 90\nthreshold: 95\nrules:\n"
        "  - {name: big, field: company, present: true, points: 30}\n"
        "  - {name: no phone, field: phone, present: false, points: -100}\n"
        "  - {name: vip, field: source, equals: VIP, points: 5}\n"
        "  - {name: not from, field: region, not_in: [fr], points: 1}\n"
    )
    scoring = scoring_load(path)
    assert scoring.score({"company": "x", "phone": "1"}) == (100, True, ["big"])
    assert scoring.score({"phone": ""}) == (0, False, ["no phone"])
    assert scoring.score({"phone": "1", "source": " vip "}) == (95, True, ["vip"])
    # not_in never matches an empty field
    assert scoring.score({"phone": "1", "region": "de"}) == (91, False, ["not from"])


def test_config_error_says_which_rule(tmp_path: Path):
    path = tmp_path / "scoring.yaml"
    path.write_text(
        "version: 1\nbase: 0\nthreshold: 50\nrules:\n"
        "  - {name: bad, field: company, matches: '(', points: 5}\n"
    )
    with pytest.raises(ScoringConfigError, match=r"rules\[0\] \(bad\).*regular expression"):
        scoring_load(path)


class Worker:
    """A Celery worker started from the Procfile's line for a pool, in a session of its own."""

    def __init__(self, pool: str, env: dict[str, str], log_path: Path, *options: str) -> None:
        argv = argv_with_defaults(procfile()[f"pool-{pool}"])
        argv = [sys.executable, "-m", "celery", *argv[1:], *options]
        argv = with_option(argv, "-n", f"pool-{pool}-{uuid.uuid4().hex[:6]}@%h")
        argv = with_option(argv, "-c", "1")
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.popen = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**env, "PYTHONUNBUFFERED": "1"},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, *texts: str, timeout: float = 60.0) -> str | None:
        """The first of the texts the log shows; None when the worker exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            for text in texts:
                if text in log:
                    return text
            if self.popen.poll() is not None:
                return None
            time.sleep(0.2)
        raise AssertionError(f"none of {texts} in the log:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)


def rules_file(path: Path, rule_name: str, points: object) -> Path:
    path.write_text(
        "version: 1\nbase: 0\nthreshold: 50\nrules:\n"
        "  - {name: phone given, field: phone, present: true, points: 10}\n"
        f"  - {{name: {rule_name}, field: company, present: true, points: {points}}}\n"
    )
    return path


# Past its start-up checks, a worker whose broker is unreachable says so (and keeps trying).
PAST_START = "Cannot connect to redis"


def offline_env(tmp_path: Path, rules: Path) -> dict[str, str]:
    """The test's environment with these rules and a broker nobody listens on: a worker that
    got past its start-up checks takes no task from the tests' live stack."""
    return {
        **os.environ,
        "LEADFLOW_SCORING_CONFIG": str(rules),
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }


def test_pool_a_does_not_start_on_broken_rules_and_names_the_rule(tmp_path: Path):
    rules = rules_file(tmp_path / "scoring.yaml", "company given", "lots")
    worker = Worker("a", offline_env(tmp_path, rules), tmp_path / "pool-a.log")
    try:
        assert worker.wait_for(PAST_START, "ready.") is None, worker.log()[-3000:]
        assert worker.popen.wait(timeout=10) != 0
    finally:
        worker.stop()
    assert (
        "pool A not started: broken scoring rules: "
        f"{rules}: rules[1] (company given): 'points' must be an integer, got 'lots'"
    ) in worker.log()


def test_pools_b_and_c_start_whatever_the_scoring_rules(tmp_path: Path):
    rules = rules_file(tmp_path / "scoring.yaml", "company given", "lots")
    worker = Worker("b", offline_env(tmp_path, rules), tmp_path / "pool-b.log")
    try:
        assert worker.wait_for(PAST_START) == PAST_START  # B does not score: it does not check
    finally:
        worker.stop()


@pytest.mark.django_db(transaction=True)
def test_pool_a_children_score_with_the_rules_checked_at_start(
    live_stack, api, make_tenant, tmp_path: Path
):
    rules = rules_file(tmp_path / "scoring.yaml", "checked at start", 60)
    live_stack.kill("pool-a")
    env = {
        **live_stack.env,
        "LEADFLOW_SCORING_CONFIG": str(rules),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    # One task per child: each batch runs in a child forked after the file changed.
    worker = Worker("a", env, tmp_path / "pool-a.log", "--max-tasks-per-child", "1")
    try:
        assert worker.wait_for("ready.") == "ready."
        rules_file(rules, "edited after start", -60)  # valid, different: read at restart only
        _, key = make_tenant()
        for _ in range(2):  # two batches, two children
            lead = {"email": f"{uuid.uuid4().hex[:10]}@acme.com", "company": "Acme"}
            response = api.post("/api/v1/leads", json=lead, headers=auth(key))
            assert response.status_code == 202, response.text
            trace_id = response.json()["trace_id"]
            stored = wait_until(
                lambda trace_id=trace_id: Lead.objects.filter(trace_id=trace_id).first(),
                timeout=60,
                message="the lead was not stored",
            )
            assert (stored.score, stored.is_qualified) == (60, True)
            assert stored.score_reasons == ["checked at start"]
        assert "pool A: 2 scoring rules checked" in worker.log()
    finally:
        worker.stop()
        live_stack.restart("pool-a")
