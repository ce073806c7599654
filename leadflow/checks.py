"""The timing invariants between settings, as Django system checks: a misconfiguration refuses
to start with an error naming both settings, instead of a pipeline that doubles or loses work.

`manage.py check` and every management command (the control process) run them; the API
(leadflow/wsgi.py) and the workers (workers/checks.py) call `timing_checks_run()` as they start,
as neither runs Django's checks by itself (Celery's Django fixup runs them but ignores errors).
"""

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

TAG = "leadflow_timing"

# A task starts an outbound call only while one (and its recording, ~2 s) fits before its
# deadline: a deadline under twice a call plus this sends its work round the queue unfinished.
CALL_RECORDING_SECONDS = 2.0


@checks.register(TAG)
def visibility_timeout_check(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """A held message is handed out again once its lease has not been renewed for the
    visibility timeout: under three renewals, one slow renewal doubles a running batch."""
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    renew = settings.LEASE_RENEW_SECONDS
    if visibility >= 3 * renew:
        return []
    return [
        checks.Error(
            f"CELERY_VISIBILITY_TIMEOUT ({visibility:g} s) must be at least 3 x "
            f"LEADFLOW_LEASE_RENEW_SECONDS ({renew:g} s): a batch still running would be "
            "handed out again after a renewal or two came late (workers/lease.py).",
            id="leadflow.E201",
        )
    ]


@checks.register(TAG)
def inflight_republish_check(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """A batch handed to pool A is published again when not stored within the republish
    period: at or under the task time limit, a batch still legitimately running is doubled."""
    republish = settings.INFLIGHT_REPUBLISH_SECONDS
    limit = settings.CELERY_TASK_TIME_LIMIT
    if republish > limit:
        return []
    return [
        checks.Error(
            f"LEADFLOW_INFLIGHT_REPUBLISH_SECONDS ({republish:g} s) must be over "
            f"CELERY_TASK_TIME_LIMIT ({limit:g} s): a batch pool A is still running would be "
            "published again (apps/control/dispatcher.py).",
            id="leadflow.E202",
        )
    ]


def crm_retry_schedule_seconds() -> float:
    """The longest a lead can spend in pool C's retries: every attempt's call at its timeout,
    and every countdown between them at its most (base x 2^(n-1), capped, + the jitter)."""
    countdowns = sum(
        min(settings.CRM_RETRY_BASE_SECONDS * 2 ** (n - 1), settings.CRM_RETRY_BACKOFF_MAX_SECONDS)
        * (1 + settings.CRM_RETRY_JITTER)
        for n in range(1, settings.CRM_MAX_RETRIES + 1)
    )
    return countdowns + (settings.CRM_MAX_RETRIES + 1) * settings.CRM_TIMEOUT_SECONDS


@checks.register(TAG)
def stalled_lead_check(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """The stalled-lead sweeper sends on a lead waiting longer than STALLED_LEAD_SECONDS: under
    the CRM's whole retry schedule, a lead between two retries is delivered twice."""
    stalled = settings.STALLED_LEAD_SECONDS
    schedule = crm_retry_schedule_seconds()
    if stalled > schedule:
        return []
    return [
        checks.Error(
            f"LEADFLOW_STALLED_LEAD_SECONDS ({stalled:g} s) must be over the CRM's whole retry "
            f"schedule ({schedule:g} s from LEADFLOW_CRM_MAX_RETRIES, "
            "LEADFLOW_CRM_RETRY_BASE_SECONDS, LEADFLOW_CRM_RETRY_BACKOFF_MAX_SECONDS, "
            "LEADFLOW_CRM_RETRY_JITTER and LEADFLOW_CRM_TIMEOUT_SECONDS): a lead between two "
            "retries would be sent again (apps/control/sweeper.py).",
            id="leadflow.E203",
        )
    ]


@checks.register(TAG)
def task_deadline_check(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Pools B and C bound a task by its own deadline (Celery enforces none on threads) and
    start a call only while one fits: a deadline under two calls would never finish its work."""
    errors = []
    for deadline, call, deadline_name, call_name, id_ in (
        (
            settings.AI_TASK_DEADLINE_SECONDS,
            settings.AI_PROVIDER_TIMEOUT_SECONDS,
            "LEADFLOW_POOL_B_TASK_DEADLINE_SECONDS",
            "LEADFLOW_AI_TIMEOUT_SECONDS",
            "leadflow.E204",
        ),
        (
            settings.CRM_TASK_DEADLINE_SECONDS,
            settings.CRM_TIMEOUT_SECONDS,
            "LEADFLOW_POOL_C_TASK_DEADLINE_SECONDS",
            "LEADFLOW_CRM_TIMEOUT_SECONDS",
            "leadflow.E205",
        ),
    ):
        if deadline < 2 * call + CALL_RECORDING_SECONDS:
            errors.append(
                checks.Error(
                    f"{deadline_name} ({deadline:g} s) must be at least twice {call_name} "
                    f"({call:g} s) + {CALL_RECORDING_SECONDS:g}: the task would send its work "
                    "round the queue without ever doing any.",
                    id=id_,
                )
            )
    return errors


def timing_checks_run(process: str) -> None:
    """At a process's start: refuse to start (ImproperlyConfigured) on any timing error."""
    errors = [message for message in checks.run_checks(tags=[TAG]) if message.is_serious()]
    if errors:
        raise ImproperlyConfigured(
            f"{process} not started: " + "; ".join(f"{e.id}: {e.msg}" for e in errors)
        )
