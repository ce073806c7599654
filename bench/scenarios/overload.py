"""overload: single leads offered at 2× and 5× what the machine can process end to end, with
the whole platform running (API, pools A, B, C, control). Measured: the ACK latency, the share
answered 429 (and with Retry-After), the time critical leads take to be qualified, and the
goodput (leads qualified/s) against the capacity measured first in the same run.

Then a spike: 10× capacity for a few seconds between stretches at half of it (the seeds'
"600 leads/min burst", scaled to this machine), to time how long the controller takes to go to
thin mode and to come back to normal after it. Every phase keeps the controller's timeline (lag
per tier, the mode transitions, marked on its plot) and each bench tenant's overload receipt
(apps/usage, as its GET /api/v1/usage gives it).

The load is paced (wrk with a schedule, bench/wrk/paced.lua): open loop as long as a free
connection exists. When every connection waits on the server, the schedule's slots are counted
as missed, and the figures say how much of the offered load was really sent.
"""

import contextlib
import math
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import load, profile, seams
from bench.scenarios import (
    Context,
    api_url,
    app_api,
    cpu_meter,
    inboxes_fill,
    probe,
    ratio,
    target,
    watching,
)
from bench.stack import Stack, control_service, pool_service

GRACE_SECONDS = 30.0  # after a phase: how long critical leads still in flight may take


@contextlib.contextmanager
def platform(ctx: Context, name: str, max_seconds: float, backlog: int = 0):
    """A fresh platform on empty state: the API, pools A, B, C and the control process; with
    `backlog` leads posted (batch API) before the control process starts dispatching."""
    seams.state_reset()  # before any worker starts: kombu's queue bindings live in Redis
    with ctx.stack(name, max_seconds=max_seconds) as stack:
        api = app_api()
        stack.start(api, pool_service("a"), pool_service("b"), pool_service("c"))
        if backlog:
            inboxes_fill(ctx, api_url(api), backlog)
        stack.start(control_service(max_seconds))
        probe(ctx, api)
        yield stack, api


def capacity_probe(ctx: Context) -> dict:
    """What the machine processes end to end, everything running at once: the intake taking
    single leads in closed loop at 16 connections (its 2xx/s), and the pipeline working through
    a backlog posted first (leads qualified/s while it lasts, so that it neither waits for work
    nor works on crumbs). Capacity is the smaller of the two."""
    seconds = ctx.config.capacity_seconds
    backlog = ctx.config.capacity_backlog
    with platform(ctx, "overload-capacity", seconds + 300, backlog=backlog) as (stack, api):
        services = list(stack.services.values())
        with (
            watching(seams.qualified_count) as watcher,
            watching(seams.inbox_waiting) as backlog_watcher,
            cpu_meter(ctx, stack) as meter,
            profile.sampling(ctx, "capacity", *services, seconds=seconds),
        ):
            started = time.monotonic()
            result = load.run(
                load.LoadSpec(url=api_url(api), keys=ctx.keys, connections=16, threads=1),
                seconds,
                ctx.run_dir / "wrk",
                slice_seconds=ctx.config.slice_seconds,
            )
            ended = time.monotonic()
            waiting = seams.inbox_waiting()
        # The pace from the first stored batch until the backlog ran out (under one batch, or
        # the end): from then on the pipeline only follows the intake.
        flowing = next((at for at, count in watcher.samples if count > 0), started)
        emptied = next(
            (at for at, count in backlog_watcher.samples if at > flowing and count < 500), ended
        )
        rate = watcher.rate_between(flowing, min(emptied, ended))
        series = {"load": result.series(), "rows": watcher.series(started)}
    figures = result.figures()
    pipeline = rate or 0.0
    # End to end, the machine processes no more than the slower of the two, measured together.
    capacity = min(pipeline, figures["ok_per_s"])
    return {
        "capacity_leads_per_s": round(capacity, 1),
        "limited_by": "intake" if figures["ok_per_s"] < pipeline else "pipeline",
        "pipeline_leads_per_s": round(pipeline, 1),
        "intake_ok_per_s": figures["ok_per_s"],
        "intake_p99_ms": figures["p99_ms"],
        "seconds": round(ended - started, 1),
        "backlog_at_start": backlog,
        "backlog_at_end": waiting,
        "backlog_lasted_s": round(min(emptied, ended) - started, 1),
        "cpu_cores": meter.cores,
        "series": series,
    }


def _ack_p99_with_unanswered(result: load.LoadResult) -> float | None:
    """p99 of the ACK latency counting requests never answered (timeouts, refused connections)
    as infinitely slow: math.inf when more than 1 % were never answered."""
    errors = result.errors()
    answered = result.total("answered")
    unanswered = errors.get("timeout", 0) + errors.get("connect", 0)
    if not answered:
        return math.inf
    rank = 0.99 * (answered + unanswered)
    if rank > answered:
        return math.inf
    return result.percentile_ms(100.0 * rank / answered)


def _critical_figures(phase_end: float) -> dict:
    """Time from receipt to qualification of the leads sent as critical and admitted as such."""
    waiting_deadline = time.monotonic() + GRACE_SECONDS
    while time.monotonic() < waiting_deadline and seams.redis_critical_waiting():
        time.sleep(0.5)
    time.sleep(2.0)  # the last batch taken from the inbox is being written
    leads = seams.leads_sent_critical()
    critical = [lead for lead in leads if lead.tier == "critical"]
    waits = sorted(
        (lead.qualified_at - lead.received_at).total_seconds()
        for lead in critical
        if lead.qualified_at is not None
    )
    still_waiting = seams.redis_critical_waiting()
    figures = {
        "critical_stored": len(leads),
        "critical_stored_critical": len(critical),
        "critical_demoted": len(leads) - len(critical),
        "critical_still_waiting": still_waiting,
    }
    if waits:
        total = len(waits) + still_waiting  # the ones still waiting count as slower than all
        rank = math.ceil(0.99 * total)
        figures["critical_p50_s"] = round(statistics.median(waits), 3)
        figures["critical_p99_s"] = round(waits[rank - 1], 3) if rank <= len(waits) else math.inf
        figures["critical_max_s"] = round(waits[-1], 3)
    return figures


def overload_phase(ctx: Context, name: str, rate: float, seconds: float) -> dict:
    """Offer `rate` leads/s for `seconds` to a fresh platform; return figures and series."""
    config = ctx.config
    # Enough connections to keep offering the rate while answers take up to a second.
    connections = int(min(config.overload_max_connections, max(64, rate)))
    spec = load.LoadSpec(
        url="",
        keys=ctx.keys,
        connections=connections,
        threads=2,
        critical_permille=config.overload_critical_permille,
        rate=rate,
        timeout_seconds=10,
    )
    with platform(ctx, f"overload-{name}", seconds + GRACE_SECONDS + 300) as (stack, api):
        spec.url = api_url(api)
        since = datetime.now(tz=UTC)
        ctx.log(f"overload: {name}, {rate:,.0f} leads/s offered over {connections} connections")
        with watching(seams.qualified_count) as watcher:
            started, started_epoch = time.monotonic(), time.time()
            with (
                cpu_meter(ctx, stack) as meter,
                profile.sampling(
                    ctx, f"overload-{name}", api, stack.services["pool-a"], seconds=min(seconds, 20)
                ),
            ):
                result = load.run(spec, seconds, ctx.run_dir / "wrk", config.overload_slice_seconds)
            ended = time.monotonic()
            goodput = watcher.rate_between(started, ended) or 0.0
            critical = _critical_figures(ended)
            mode = seams.platform_mode()
            # What each tenant's GET /api/v1/usage says of the phase (README "Receipt").
            receipts = seams.receipts(ctx.tenants, since)
            timeline = _timeline(seams.control_history(started_epoch), started_epoch)
        rows = watcher.series(started)
    figures = result.figures()
    ack_p99_all = _ack_p99_with_unanswered(result)
    figures.update(
        {
            "ack_p50_ms": figures["p50_ms"],
            "ack_p99_ms": figures["p99_ms"],
            "ack_p99_with_unanswered_ms": None
            if ack_p99_all == math.inf
            else round(ack_p99_all, 2),
            "ack_never_answered_over_1_percent": ack_p99_all == math.inf,
            "goodput_leads_per_s": round(goodput, 1),
            "mode_at_end": mode,
            "cpu_cores": meter.cores,
            **critical,
        }
    )
    return {
        "figures": figures,
        "series": {"load": result.series(), "rows": rows, "offered_per_s": rate, **timeline},
        "receipts": receipts,
    }


def _timeline(history: list[dict], origin_epoch: float) -> dict:
    """The controller's samples on the phase's time axis: each tier's lag, and the mode
    transitions ({t, from, to})."""
    lag, transitions, previous = [], [], None
    for sample in history:
        t = round(sample["at"] - origin_epoch, 2)
        lag.append({"t": t, **{tier: m["lag"] for tier, m in sample["tiers"].items()}})
        if previous is not None and sample["mode"] != previous:
            transitions.append({"t": t, "from": previous, "to": sample["mode"]})
        previous = sample["mode"]
    return {"lag": lag, "transitions": transitions}


def mode_times(transitions: list[dict], spike_start: float, spike_end: float) -> dict:
    """Seconds from the spike's start to the first mode past normal (thin, the first step of
    the mode machine), and from the spike's end to the return to normal that lasted to the
    end of the phase (None: not seen)."""
    activated = next(
        (t["t"] for t in transitions if t["from"] == "normal" and t["t"] >= spike_start), None
    )
    recovered = None
    if activated is not None and transitions[-1]["to"] == "normal":
        recovered = transitions[-1]["t"]
    return {
        "thin_activation_s": None if activated is None else round(activated - spike_start, 1),
        "recovery_s": None if recovered is None else round(recovered - spike_end, 1),
        "modes": " → ".join(["normal", *(t["to"] for t in transitions if t["t"] >= spike_start)]),
    }


def spike_phase(ctx: Context, capacity: float) -> dict:
    """`spike_base` × capacity, then `spike_multiplier` × capacity for `spike_seconds`, then
    the base again while the platform recovers; one fresh platform, one time axis."""
    config = ctx.config
    peak, base = config.spike_multiplier * capacity, config.spike_base * capacity
    segments = (
        ("before", base, config.spike_before_seconds),
        ("spike", peak, config.spike_seconds),
        ("after", base, config.spike_after_seconds),
    )
    connections = int(min(config.overload_max_connections, max(64, peak)))
    total = sum(seconds for _, _, seconds in segments)
    with platform(ctx, "overload-spike", total + GRACE_SECONDS + 300) as (stack, api):
        ctx.log(
            f"overload: spike, {base:,.0f} → {peak:,.0f} → {base:,.0f} leads/s offered over "
            f"{connections} connections"
        )
        since = datetime.now(tz=UTC)
        marks: dict[str, float] = {}
        slices: list[load.Slice] = []
        with watching(seams.qualified_count) as watcher:
            origin, origin_epoch = time.monotonic(), time.time()
            with cpu_meter(ctx, stack) as meter:
                for name, rate, seconds in segments:
                    spec = load.LoadSpec(
                        url=api_url(api),
                        keys=ctx.keys,
                        connections=connections,
                        threads=2,
                        critical_permille=config.overload_critical_permille,
                        rate=rate,
                        timeout_seconds=10,
                    )
                    marks[name] = time.monotonic() - origin
                    count = max(1, round(seconds / config.spike_slice_seconds))
                    slices += [
                        load.measure_slice(spec, seconds / count, ctx.run_dir / "wrk", origin)
                        for _ in range(count)
                    ]
            ended = time.monotonic()
            goodput = watcher.rate_between(origin, ended) or 0.0
            mode = seams.platform_mode()
            receipts = seams.receipts(ctx.tenants, since)
            timeline = _timeline(seams.control_history(origin_epoch), origin_epoch)
        rows = watcher.series(origin)
    result = load.LoadResult(spec=spec, slices=slices)
    figures = result.figures()
    spike = (marks["spike"], marks["after"])
    figures.update(
        {
            "offered_per_s": {
                "before": round(base, 1),
                "spike": round(peak, 1),
                "after": round(base, 1),
            },
            "goodput_leads_per_s": round(goodput, 1),
            "mode_at_end": mode,
            "cpu_cores": meter.cores,
            "spike_seconds": round(spike[1] - spike[0], 1),
            **mode_times(timeline["transitions"], *spike),
        }
    )
    series = {"load": result.series(), "rows": rows, "offered_per_s": peak, **timeline}
    return {"figures": figures, "series": {**series, "spike": spike}, "receipts": receipts}


def run(ctx: Context) -> dict:
    ctx.log("overload: measuring capacity (closed loop, 16 connections, whole platform)")
    capacity = capacity_probe(ctx)
    value = capacity["capacity_leads_per_s"]
    ctx.log(f"overload: capacity {value:,.0f} leads/s qualified end to end")
    if not value:
        raise RuntimeError("no lead was qualified while measuring capacity")
    phases, series = {}, {"capacity": {**capacity.pop("series"), "offered_per_s": None}}
    receipts: dict[str, dict] = {}
    for multiplier in ctx.config.overload_multipliers:
        name = f"{multiplier:g}x"
        phase = overload_phase(ctx, name, multiplier * value, ctx.config.overload_seconds)
        phase["figures"]["goodput_vs_capacity"] = ratio(
            phase["figures"]["goodput_leads_per_s"], value
        )
        phases[name] = phase["figures"]
        series[name] = phase["series"]
        receipts[name] = phase["receipts"]
    spike = None
    if ctx.config.spike_multiplier:
        ctx.log(f"overload: a {ctx.config.spike_multiplier:g}× spike")
        spike = spike_phase(ctx, value)
        phases["spike"] = spike["figures"]
        series["spike"] = spike["series"]
        receipts["spike"] = spike["receipts"]
    top = f"{max(ctx.config.overload_multipliers):g}x"
    f = phases[top]
    ack = f["ack_p99_with_unanswered_ms"]
    critical_p99 = f.get("critical_p99_s")
    ack_text = f"{ack:,.0f} ms" if ack is not None else "∞ (over 1 % never answered)"
    goodput_ratio = f["goodput_vs_capacity"]
    notes = [
        f"capacity = the smaller of, measured together on the whole platform: the intake's 2xx/s "
        f"in closed loop at 16 connections ({capacity['intake_ok_per_s']:,.0f}) and the "
        f"pipeline's leads qualified/s working through {capacity['backlog_at_start']:,} leads "
        f"posted first ({capacity['pipeline_leads_per_s']:,.0f}, from the first stored batch "
        f"until the backlog ran out, {capacity['backlog_lasted_s']} s in): {value:,.0f} leads/s, "
        f"limited by the {capacity['limited_by']}.",
        "ACK p99 counts requests never answered (wrk timeout 10 s, refused connections) as "
        "infinitely slow; 'missed' are scheduled requests never sent because every connection "
        "was waiting on the server; 'dropped_at_slice_end' were in flight when a "
        f"{ctx.config.overload_slice_seconds:g}-second slice ended: the server still admitted "
        "them (goodput counts them), but their wait, among the longest, is not in the ACK "
        "percentiles, which are therefore on the low side.",
        "Critical time to qualified = qualified_at − received_at in PostgreSQL for leads sent "
        "as critical and admitted as critical (qualified_at is taken when pool A starts the "
        "batch, before its commit).",
    ]
    if spike is not None:
        s = spike["figures"]
        activation, recovery = s["thin_activation_s"], s["recovery_s"]
        notes.append(
            f"spike: {s['offered_per_s']['spike']:,.0f} leads/s "
            f"({ctx.config.spike_multiplier:g}× capacity) for {s['spike_seconds']} s between "
            f"stretches at {ctx.config.spike_base:g}×: modes {s['modes']}; thin mode "
            + ("never" if activation is None else f"{activation} s after the spike began")
            + "; back to normal "
            + ("not within the phase" if recovery is None else f"{recovery} s after it ended")
            + " (the controller's own samples, one a second; a mode is held at least "
            "LEADFLOW_MODE_DWELL_SECONDS)."
        )
    if "pipeline_leads_per_s" in ctx.measured:
        notes.append(
            "For comparison, the pipeline scenario (inboxes filled beforehand, no intake "
            f"running) moved {ctx.measured['pipeline_leads_per_s']:,.0f} leads/s."
        )
    for name, phase in phases.items():
        offered = phase.get("offered_per_s")
        if not isinstance(offered, int | float):  # the spike's: one rate per stretch
            continue
        if phase.get("sent_per_s") and phase["sent_per_s"] < 0.9 * offered:
            notes.append(
                f"{name}: only {phase['sent_per_s']:,.0f} of {phase['offered_per_s']:,.0f} "
                f"requests/s offered could be sent over {phase['connections']} connections."
            )
    return {
        "title": "overload: single leads offered at "
        + ", ".join(f"{m:g}×" for m in ctx.config.overload_multipliers)
        + " capacity",
        "unit": "per phase",
        "figures": phases,
        "reference": {"name": "capacity", "title": "measured capacity", "figures": capacity},
        "ratio": goodput_ratio,
        "headline": {
            "leadflow": f"at {top}: ACK p99 {ack_text}, "
            f"{f['share_429'] or 0:.0%} answered 429, critical p99 {critical_p99} s, "
            f"goodput {f['goodput_leads_per_s']:,.0f} leads/s",
            "reference": f"capacity {value:,.0f} leads/s",
            "ratio": f"goodput {goodput_ratio} × capacity",
        },
        "targets": [
            target(f"ACK p99 at {top}", "≤ 100 ms", ack, ack is not None and ack <= 100),
            target(
                f"critical leads qualified, p99 at {top}",
                "≤ 5 s",
                critical_p99,
                critical_p99 is not None and critical_p99 <= 5,
            ),
            target(
                f"goodput vs capacity at {top}",
                "≥ 0.9 ×",
                goodput_ratio,
                goodput_ratio is not None and goodput_ratio >= 0.9,
            ),
        ],
        "series": series,
        "receipts": receipts,
        "notes": notes,
    }


def rss_sample(stack: Stack) -> dict[str, dict[int, float]]:
    """RSS in MB of every process of every service, by service and pid."""
    sample: dict[str, dict[int, float]] = {}
    for name, service in stack.services.items():
        for pid in service.pids():
            with contextlib.suppress(OSError, ValueError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        sample.setdefault(name, {})[pid] = int(line.split()[1]) / 1024
    return sample
