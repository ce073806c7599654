"""The timing invariants between settings (leadflow/checks.py): each check names both settings
when they contradict each other and is silent when they agree; `manage.py check`, the API, a
worker and the control process refuse to start on such settings."""

import os
import subprocess
import sys

import pytest

from leadflow.checks import (
    crm_retry_schedule_seconds,
    inflight_republish_check,
    stalled_lead_check,
    task_deadline_check,
    visibility_timeout_check,
)
from tests.deploy.processes import worker_argv, worker_env
from tests.deploy.test_redis_checks import api_argv

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def messages(check) -> list[str]:
    errors = check()
    assert all(error.is_serious() for error in errors), "an error, not a warning"
    return [error.msg for error in errors]


def test_visibility_timeout_under_three_lease_renewals_names_both(settings):
    settings.LEASE_RENEW_SECONDS = 5
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
        **settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        "visibility_timeout": 14,
    }
    [message] = messages(visibility_timeout_check)
    assert "CELERY_VISIBILITY_TIMEOUT (14 s)" in message
    assert "LEADFLOW_LEASE_RENEW_SECONDS (5 s)" in message

    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
        **settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        "visibility_timeout": 15,
    }
    assert messages(visibility_timeout_check) == []


def test_inflight_republish_not_over_the_task_time_limit_names_both(settings):
    settings.CELERY_TASK_TIME_LIMIT = 300
    settings.INFLIGHT_REPUBLISH_SECONDS = 300
    [message] = messages(inflight_republish_check)
    assert "LEADFLOW_INFLIGHT_REPUBLISH_SECONDS (300 s)" in message
    assert "CELERY_TASK_TIME_LIMIT (300 s)" in message

    settings.INFLIGHT_REPUBLISH_SECONDS = 301
    assert messages(inflight_republish_check) == []


def test_stalled_lead_period_within_the_crm_retry_schedule_names_both(settings):
    settings.CRM_MAX_RETRIES = 3
    settings.CRM_RETRY_BASE_SECONDS = 10
    settings.CRM_RETRY_BACKOFF_MAX_SECONDS = 60
    settings.CRM_RETRY_JITTER = 0.5
    settings.CRM_TIMEOUT_SECONDS = 10
    # Countdowns at their longest (10, 20, 40 s + 50 %) and four calls at their timeout.
    assert crm_retry_schedule_seconds() == pytest.approx(105 + 40)
    settings.STALLED_LEAD_SECONDS = 145
    [message] = messages(stalled_lead_check)
    assert "LEADFLOW_STALLED_LEAD_SECONDS (145 s)" in message
    assert "LEADFLOW_CRM_MAX_RETRIES" in message and "LEADFLOW_CRM_TIMEOUT_SECONDS" in message

    settings.STALLED_LEAD_SECONDS = 146
    assert messages(stalled_lead_check) == []


@pytest.mark.parametrize(
    ("deadline_setting", "timeout_setting", "deadline_name", "timeout_name"),
    [
        (
            "AI_TASK_DEADLINE_SECONDS",
            "AI_PROVIDER_TIMEOUT_SECONDS",
            "LEADFLOW_POOL_B_TASK_DEADLINE_SECONDS",
            "LEADFLOW_AI_TIMEOUT_SECONDS",
        ),
        (
            "CRM_TASK_DEADLINE_SECONDS",
            "CRM_TIMEOUT_SECONDS",
            "LEADFLOW_POOL_C_TASK_DEADLINE_SECONDS",
            "LEADFLOW_CRM_TIMEOUT_SECONDS",
        ),
    ],
)
def test_task_deadline_under_two_calls_names_both(
    settings, deadline_setting, timeout_setting, deadline_name, timeout_name
):
    setattr(settings, timeout_setting, 10)
    setattr(settings, deadline_setting, 21.5)
    [message] = messages(task_deadline_check)
    assert f"{deadline_name} (21.5 s)" in message
    assert f"{timeout_name} (10 s)" in message

    setattr(settings, deadline_setting, 22)
    assert messages(task_deadline_check) == []


def test_the_default_settings_pass_every_timing_check():
    for check in (
        visibility_timeout_check,
        inflight_republish_check,
        stalled_lead_check,
        task_deadline_check,
    ):
        assert messages(check) == []


def test_manage_py_check_refuses_a_republish_period_under_the_time_limit():
    env = {
        **os.environ,
        "LEADFLOW_INFLIGHT_REPUBLISH_SECONDS": "10",
        "LEADFLOW_REDIS_CHECKS": "off",
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "leadflow.E202" in done.stderr
    assert "LEADFLOW_INFLIGHT_REPUBLISH_SECONDS (10 s)" in done.stderr
    assert "CELERY_TASK_TIME_LIMIT" in done.stderr


QUEUE = "test.timing-checks"
PROCESSES = {
    "api": api_argv,
    "worker": lambda: worker_argv("b", QUEUE),
    "control": lambda: [sys.executable, "manage.py", "run_control", "--max-seconds", "60"],
}


@pytest.mark.parametrize("process", PROCESSES)
def test_every_process_refuses_to_start_on_contradicting_timings(start, process):
    env = {
        **worker_env(QUEUE),
        "LEADFLOW_POOL_C_TASK_DEADLINE_SECONDS": "5",
        "LEADFLOW_CRM_TIMEOUT_SECONDS": "10",
        "LEADFLOW_REDIS_CHECKS": "off",
        "LEADFLOW_CONTROL_METRICS_PORT": "0",
    }
    started = start(PROCESSES[process](), env, process)
    assert started.popen.wait(timeout=120) != 0
    log = started.log()
    assert "LEADFLOW_POOL_C_TASK_DEADLINE_SECONDS (5 s)" in log
    assert "LEADFLOW_CRM_TIMEOUT_SECONDS (10 s)" in log
