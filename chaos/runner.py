"""One experiment: load, the fault, the tail of load, the wait for every lead to be terminal, a
health check; then its figures. And the CRM double's deliveries, kept across the run."""

import hashlib
import json
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import httpx

from chaos.config import TARGET_RECOVERY_SECONDS, Fault
from chaos.experiments import FAULTS, Context

log = logging.getLogger("chaos")

# The delivery id: Standard Webhooks' webhook-id, or its older name (apps/crm/adapters.py).
DELIVERY_HEADERS = ("webhook-id", "x-leadflow-delivery")
# For an instant fault (a kill), answers "during the fault" are those of the next seconds.
INSTANT_WINDOW_SECONDS = 10.0
PROBE_SECONDS = 30.0


@dataclass
class Deliveries:
    """Every call the CRM double answered with success, by trace id.

    A lead delivered again with other content (its enrichment, shed under overload, backfilled
    and sent again: apps/crm/services.py CRM_READY) is an update; delivered again with the same
    content under another delivery id, a duplicate the CRM cannot recognise.
    """

    # trace id -> {content digest: {delivery ids}}
    contents: dict[str, dict] = field(default_factory=lambda: defaultdict(lambda: defaultdict(set)))
    calls: Counter = field(default_factory=Counter)
    # trace id -> [(when the double got it, delivery id, leads in that call)], for the report
    history: dict[str, list] = field(default_factory=lambda: defaultdict(list))

    def collect(self, crm_double, path: str) -> None:
        for call in crm_double.calls("crm"):
            if call.get("path") != path or call.get("status", 200) >= 300:
                continue
            headers = {key.lower(): value for key, value in call.get("headers", {}).items()}
            delivery = next((headers[h] for h in DELIVERY_HEADERS if h in headers), "")
            body = call.get("body") or {}
            leads = body.get("leads", []) if isinstance(body, dict) else []
            for lead in leads:
                trace_id = str(lead.get("trace_id"))
                digest = hashlib.sha256(json.dumps(lead, sort_keys=True).encode()).hexdigest()
                self.contents[trace_id][digest].add(delivery)
                self.calls[trace_id] += 1
                self.history[trace_id].append((call.get("at"), delivery, len(leads)))
        # The double keeps every call in memory: start it afresh (behaviour too). A call landing
        # between the read and the reset would be missed; the load is off by now.
        crm_double.reset()

    def duplicated(self, trace_id: str) -> bool:
        return any(len(ids) > 1 for ids in self.contents.get(trace_id, {}).values())

    def counts(self, trace_ids) -> dict[str, int]:
        """duplicate: the same content under two delivery ids; updated: sent again with other
        content; repeated: more than one call (a receiver drops a repeated delivery id)."""
        return {
            "duplicate_deliveries": sum(1 for t in trace_ids if self.duplicated(t)),
            "updated_deliveries": sum(1 for t in trace_ids if len(self.contents.get(t, ())) > 1),
            "repeated_deliveries": sum(1 for t in trace_ids if self.calls.get(t, 0) > 1),
        }

    def duplicate_sample(self, trace_ids, started_at: float, count: int = 3) -> dict:
        """A few duplicated trace ids, each call as (seconds since the run began, delivery id,
        leads in the call)."""
        found = [t for t in trace_ids if self.duplicated(t)][:count]
        return {
            t: [
                (round(at - started_at, 1) if at else None, delivery[:8], size)
                for at, delivery, size in self.history[t]
            ]
            for t in found
        }


class PlatformBroken(RuntimeError):
    pass


def probe(api_url: str, tenants, tracker, timeout: float = PROBE_SECONDS) -> str | None:
    """One lead per tenant, each to be accepted and terminal within `timeout`; None when all
    were, else what went wrong."""
    from chaos.load import LeadFactory

    factory = LeadFactory(seed=3)
    trace_ids = []
    with httpx.Client(base_url=api_url, timeout=10.0) as client:
        for tenant in tenants:
            # Normal tier: a paused LOW tier is a mode of the platform, not a fault.
            lead = {**factory.lead(), "priority": "normal"}
            try:
                response = client.post(
                    "/api/v1/leads", json=lead, headers={"Authorization": f"Bearer {tenant.key}"}
                )
            except httpx.HTTPError as exc:
                return f"the API did not answer a probe ({type(exc).__name__})"
            if response.status_code != 202:
                return f"the API answered a probe {response.status_code}: {response.text[:200]}"
            trace_id = response.json()["trace_id"]
            tracker.accepted("_probe", tenant.name, [trace_id], time.monotonic())
            trace_ids.append(trace_id)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(t in tracker.terminal for t in trace_ids):
            return None
        time.sleep(0.5)
    return f"probe leads not terminal within {timeout:.0f} s"


def health_check(ctx: Context, tenants, tracker) -> str | None:
    """Does the platform serve? If not, restart it (as an operator would) and return why; raise
    PlatformBroken when it does not serve after the restart either."""
    problem = probe(ctx.platform.api_url, tenants, tracker)
    if problem is None:
        return None
    log.warning("the platform does not serve (%s): restarting it", problem)
    ctx.platform.restart_all()
    again = probe(ctx.platform.api_url, tenants, tracker, timeout=60)
    if again is not None:
        raise PlatformBroken(f"{problem}; after a restart still: {again}")
    return problem


def run_experiment(ctx: Context, fault: Fault, load, tracker, tenants, deliveries) -> dict:
    config = ctx.config
    result: dict = {"name": fault.name, "kind": fault.kind, "fault_seconds": fault.seconds}
    began = time.monotonic()
    load.run_for(fault.name)
    time.sleep(config.baseline_seconds)
    try:
        run = FAULTS[fault.kind](ctx, fault)
    except Exception as exc:
        load.run_for(None)
        raise RuntimeError(f"{fault.name}: the fault could not be applied: {exc}") from exc
    time.sleep(config.tail_seconds)
    load.run_for(None)
    settle_deadline = run.end + config.settle_seconds
    while time.monotonic() < settle_deadline and tracker.pending_of(fault.name):
        time.sleep(0.5)
    time.sleep(0.5)  # answers still in flight when the load stopped
    ended = time.monotonic()
    tracker.poll()
    stuck = tracker.pending_of(fault.name)
    stuck_where = tracker.stuck_where(fault.name)
    stuck_sample = tracker.stuck_sample(fault.name)
    recovered = tracker.recovered_at(fault.name, accepted_before=run.end)
    deliveries.collect(ctx.crm, tenants[0].crm_path)
    time.sleep(max(run.end + fault.check_after - time.monotonic(), 0))
    try:
        unhealthy = health_check(ctx, tenants, tracker)
    except PlatformBroken as exc:
        unhealthy, result["platform_broken"] = str(exc), True

    window_end = run.end if run.end - run.start >= 1 else run.start + INSTANT_WINDOW_SECONDS
    answers = [a for a in load.answers if a.experiment == fault.name]
    during = [a for a in answers if run.start <= a.sent_at <= window_end]
    # Requests sent well inside the window: the fault was surely on when they were answered.
    inside = [a for a in answers if run.start + 0.5 <= a.sent_at <= run.end - 0.5]
    result.update(
        began=began,
        fault_start=run.start,
        fault_end=run.end,
        ended=ended,
        actions=run.actions,
        skipped=run.skipped,
        accepted=sum(a.accepted for a in answers),
        accepted_during_fault=sum(a.accepted for a in inside),
        requests=len(answers),
        sends_missed=load.missed[fault.name],
        answers=_by_status(answers),
        answers_during_fault=_by_status(during),
        http_5xx=sum(1 for a in answers if a.status >= 500 and a.status != 503),
        no_answer=sum(1 for a in answers if a.status == 0),
        no_answer_errors=dict(Counter(a.error for a in answers if a.status == 0)),
        errors_5xx=sorted({a.error for a in answers if a.status >= 500})[:5],
        http_503_without_retry_after=sum(
            1 for a in answers if a.status == 503 and not a.retry_after
        ),
        answer_seconds_p99_during_fault=_p99([a.seconds for a in during if a.status]),
        stuck=stuck,
        stuck_where=stuck_where,
        stuck_sample=stuck_sample,
        outcomes=tracker.terminal_counts(fault.name),
        recovery_seconds=None if recovered is None else round(max(recovered - run.end, 0.0), 1),
        process_exits=ctx.platform.exits_since(began),
        unhealthy_after=unhealthy,
        refuses_intake=fault.refuses_intake,
    )
    result["failed_by_outage"] = failed_by_outage(result, tenants[0].name)
    return result


def failed_by_outage(result: dict, crm_tenant: str) -> int:
    """Leads that ended failed or dead-lettered though nothing was wrong with them: every lead
    sent is valid, so only a CRM fault may dead-letter, and only the CRM double's tenant's."""
    count = 0
    for tenant, outcomes in result["outcomes"].items():
        count += outcomes.get("failed", 0)
        if not (result["kind"].startswith("crm_") and tenant == crm_tenant):
            count += outcomes.get("dead_lettered", 0)
    return count


def _by_status(answers) -> dict[str, int]:
    counts = Counter("no answer" if a.status == 0 else str(a.status) for a in answers)
    return dict(sorted(counts.items()))


def _p99(values: list[float]) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(int(len(values) * 0.99), len(values) - 1)], 3)


def crashes(result: dict) -> int:
    """Exits the harness did not cause, with a non-zero code."""
    return sum(
        1
        for exits in result["process_exits"].values()
        for exit in exits
        if exit not in ("killed", "code 0")
    )


def verdict(result: dict) -> dict:
    """Each target with its figure and whether it was met. Lost leads and duplicate deliveries
    are counted once the run is over: until then they are left out."""
    if result.get("skipped") or result.get("error"):
        return {}
    recovery = result.get("recovery_seconds")
    checks = {
        "lost": (result.get("lost"), "0"),
        "stuck": (result["stuck"], "0"),
        "http_5xx": (result["http_5xx"], "0 (503 is the outage answer)"),
        "no_answer": (result["no_answer"], "0 (a hang is not an answer)"),
        "http_503_without_retry_after": (result["http_503_without_retry_after"], "0"),
        "duplicate_deliveries": (result.get("duplicate_deliveries"), "0"),
        "recovery_seconds": (recovery, f"<= {TARGET_RECOVERY_SECONDS:.0f}"),
        "failed_by_outage": (result["failed_by_outage"], "0 (an outage is retried)"),
        "process_crashes": (crashes(result), "0 (no exit because a dependency blinked)"),
        "unhealthy_after": (result["unhealthy_after"], "none (serves without a restart)"),
    }
    if result["refuses_intake"]:
        checks["accepted_during_fault"] = (result["accepted_during_fault"], "0 (503 while full)")
    for pending in ("lost", "duplicate_deliveries"):
        if pending not in result:
            del checks[pending]
    met = {
        name: (value is not None and value <= TARGET_RECOVERY_SECONDS)
        if name == "recovery_seconds"
        else not value
        for name, (value, _) in checks.items()
    }
    return {
        name: {"value": value, "target": target, "pass": met[name]}
        for name, (value, target) in checks.items()
    }
