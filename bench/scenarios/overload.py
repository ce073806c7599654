"""overload: leads offered at 2× and 5× what the machine can process end to end, with the
whole platform running (API, pools A, B, C, control): single leads on cores the API shares with
the pools, then batches (BENCH_OVERLOAD_BATCH_SIZE leads a request) on shared cores and with the
API on a core of its own (bench/placement.py). Measured: the ACK latency, the share
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
import os
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import load, profile, seams
from bench import placement as placing
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
def platform(
    ctx: Context, name: str, max_seconds: float, backlog: int = 0, placement: str = "shared"
):
    """A fresh platform on empty state: the API, pools A, B, C and the control process; with
    `backlog` leads posted (batch API) before the control process starts dispatching. Its
    processes placed on the cores as `placement` says (bench/placement.py)."""
    seams.state_reset()  # before any worker starts: kombu's queue bindings live in Redis
    with (
        ctx.stack(name, max_seconds=max_seconds) as stack,
        placing.servers_placed(placement, os.environ["DATABASE_URL"]),
    ):
        api = app_api()
        workers = [pool_service("a"), pool_service("b"), pool_service("c")]
        control = control_service(max_seconds)
        api.cpus = placing.service_cpus(placement, is_api=True)
        for service in (*workers, control):
            service.cpus = placing.service_cpus(placement, is_api=False)
        stack.start(api, *workers)
        if backlog:
            inboxes_fill(ctx, api_url(api), backlog)
        stack.start(control)
        probe(ctx, api)
        yield stack, api


def run_suffix(placement: str, batch_size: int) -> str:
    """How a run's phases are named: "" for single leads on shared cores (the first kind
    measured, kept comparable with earlier reports), else e.g. "-batch20-split"."""
    shape = f"-batch{batch_size}" if batch_size else ""
    where = "" if placement == "shared" else f"-{placement}"
    return shape + where


def capacity_probe(ctx: Context, placement: str = "shared", batch_size: int = 0) -> dict:
    """What the machine processes end to end, everything running at once: the intake taking
    leads (single, or `batch_size` a request) in closed loop at 16 connections (leads accepted
    per second), and the pipeline working through a backlog posted first (leads qualified/s
    while it lasts, so that it neither waits for work nor works on crumbs). Capacity is the
    smaller of the two."""
    seconds = ctx.config.capacity_seconds
    backlog = ctx.config.capacity_backlog
    stack_name = "overload-capacity" + run_suffix(placement, batch_size)
    with platform(ctx, stack_name, seconds + 300, backlog, placement) as (stack, api):
        services = list(stack.services.values())
        with (
            watching(seams.qualified_count) as watcher,
            watching(seams.inbox_waiting) as backlog_watcher,
            cpu_meter(ctx, stack) as meter,
            profile.sampling(ctx, "capacity", *services, seconds=seconds),
        ):
            started = time.monotonic()
            result = load.run(
                load.LoadSpec(
                    url=api_url(api),
                    keys=ctx.keys,
                    connections=16,
                    threads=1,
                    batch_size=batch_size,
                ),
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
    intake = figures["accepted_leads_per_s"] if batch_size else figures["ok_per_s"]
    # End to end, the machine processes no more than the slower of the two, measured together.
    capacity = min(pipeline, intake)
    return {
        "capacity_leads_per_s": round(capacity, 1),
        "limited_by": "intake" if intake < pipeline else "pipeline",
        "pipeline_leads_per_s": round(pipeline, 1),
        "leads_per_request": batch_size or 1,
        "intake_ok_per_s": figures["ok_per_s"],
        "intake_leads_per_s": intake,
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


def overload_phase(
    ctx: Context,
    name: str,
    rate: float,
    seconds: float,
    placement: str = "shared",
    batch_size: int = 0,
) -> dict:
    """Offer `rate` leads/s (single, or `batch_size` a request) for `seconds` to a fresh
    platform; return figures and series."""
    config = ctx.config
    requests_per_s = rate / batch_size if batch_size else rate
    # Enough connections to keep offering the rate while answers take up to a second.
    connections = int(min(config.overload_max_connections, max(64, requests_per_s)))
    spec = load.LoadSpec(
        url="",
        keys=ctx.keys,
        connections=connections,
        threads=2,
        batch_size=batch_size,
        critical_permille=config.overload_critical_permille,
        rate=requests_per_s,
        timeout_seconds=10,
    )
    max_seconds = seconds + GRACE_SECONDS + 300
    with platform(ctx, f"overload-{name}", max_seconds, placement=placement) as (stack, api):
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
        "series": {
            "load": result.series(),
            "rows": rows,
            "offered_per_s": requests_per_s,
            **timeline,
        },
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


def spike_phase(ctx: Context, capacity: float, batch_size: int = 0) -> dict:
    """`spike_base` × capacity, then `spike_multiplier` × capacity for `spike_seconds`, then
    the base again while the platform recovers; one fresh platform, one time axis. Leads in
    batches of `batch_size` (0: single leads)."""
    config = ctx.config
    peak, base = config.spike_multiplier * capacity, config.spike_base * capacity
    per_request = batch_size or 1
    segments = (
        ("before", base, config.spike_before_seconds),
        ("spike", peak, config.spike_seconds),
        ("after", base, config.spike_after_seconds),
    )
    connections = int(min(config.overload_max_connections, max(64, peak / per_request)))
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
                        batch_size=batch_size,
                        critical_permille=config.overload_critical_permille,
                        rate=rate / per_request,
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
            "leads_per_request": per_request,
            **mode_times(timeline["transitions"], *spike),
        }
    )
    series = {
        "load": result.series(),
        "rows": rows,
        "offered_per_s": peak / per_request,
        **timeline,
    }
    return {"figures": figures, "series": {**series, "spike": spike}, "receipts": receipts}


def _run_phases(ctx: Context, placement: str, batch_size: int) -> tuple[dict, dict, dict, dict]:
    """The capacity for this placement and request shape, then each multiple of it offered to
    a fresh platform alike. Returns (capacity, {phase: figures}, {phase: series},
    {phase: receipts}); phases are named "2x", "5x" + run_suffix, e.g. "2x-batch20-split"."""
    suffix = run_suffix(placement, batch_size)
    shape = f"batches of {batch_size}" if batch_size else "single leads"
    ctx.log(f"overload: measuring capacity, {shape}, {placement} cores (closed loop, 16 conn.)")
    capacity = capacity_probe(ctx, placement, batch_size)
    value = capacity["capacity_leads_per_s"]
    ctx.log(f"overload: capacity {value:,.0f} leads/s end to end ({shape}, {placement} cores)")
    if not value:
        raise RuntimeError(f"no lead was qualified while measuring capacity{suffix}")
    series = {f"capacity{suffix}": {**capacity.pop("series"), "offered_per_s": None}}
    phases, receipts = {}, {}
    for multiplier in ctx.config.overload_multipliers:
        name = f"{multiplier:g}x{suffix}"
        phase = overload_phase(
            ctx, name, multiplier * value, ctx.config.overload_seconds, placement, batch_size
        )
        figures = phase["figures"]
        figures["offered_leads_per_s"] = round(multiplier * value, 1)
        figures["goodput_vs_capacity"] = ratio(figures["goodput_leads_per_s"], value)
        phases[name] = figures
        series[name] = {**phase["series"], "capacity": value / (batch_size or 1)}
        receipts[name] = phase["receipts"]
    return capacity, phases, series, receipts


PLACEMENT_TITLES = {
    "shared": "API and pools sharing both cores",
    "split": "API and Redis on one core (pools, control, PostgreSQL on the other)",
}


def _run_title(placement: str, batch_size: int) -> str:
    shape = f"batches of {batch_size} leads" if batch_size else "single leads"
    return f"{shape}, {PLACEMENT_TITLES[placement]}"


def run(ctx: Context) -> dict:
    """Single leads on shared cores (with the spike), then batches on each placement."""
    config = ctx.config
    runs = [("shared", 0)]
    if config.overload_batch_size:
        runs += [
            (p, config.overload_batch_size)
            for p in config.overload_placements
            if p == "shared" or placing.split_possible()
        ]
    capacities: dict[str, dict] = {}
    phases: dict[str, dict] = {}
    series: dict[str, dict] = {}
    receipts: dict[str, dict] = {}
    for placement, batch_size in runs:
        capacity, run_phases, run_series, run_receipts = _run_phases(ctx, placement, batch_size)
        capacities[f"capacity{run_suffix(placement, batch_size)}"] = {
            "title": f"measured capacity, {_run_title(placement, batch_size)}",
            "figures": capacity,
        }
        phases.update(run_phases)
        series.update(run_series)
        receipts.update(run_receipts)
    single = capacities["capacity"]["figures"]
    spike = None
    if config.spike_multiplier:
        # In batches when the batch runs ran: single leads cannot build a backlog on this
        # machine (the API is their bottleneck, not the pipeline), so thin mode never comes.
        spiked = capacities.get(f"capacity{run_suffix('shared', config.overload_batch_size)}")
        spike_batch = config.overload_batch_size if spiked else 0
        spiked = (spiked or capacities["capacity"])["figures"]
        ctx.log(f"overload: a {config.spike_multiplier:g}× spike")
        spike = spike_phase(ctx, spiked["capacity_leads_per_s"], spike_batch)
        phases["spike"] = spike["figures"]
        series["spike"] = spike["series"]
        receipts["spike"] = spike["receipts"]
    multipliers = config.overload_multipliers
    low, top = f"{min(multipliers):g}x", f"{max(multipliers):g}x"
    targets = []
    for placement, batch_size in runs:
        suffix, title = run_suffix(placement, batch_size), _run_title(placement, batch_size)
        ack = phases[low + suffix]["ack_p99_with_unanswered_ms"]
        targets.append(
            target(
                f"ACK p99 at {low} capacity, {title}",
                "≤ 100 ms",
                ack,
                ack is not None and ack <= 100,
            )
        )
        p99 = phases[top + suffix].get("critical_p99_s")
        targets.append(
            target(
                f"critical leads qualified, p99 at {top}, {title}",
                "≤ 5 s",
                p99,
                p99 is not None and p99 <= 5,
            )
        )
    notes = []
    for ref in capacities.values():
        c = ref["figures"]
        notes.append(
            f"{ref['title']} = the smaller of, measured together on the whole platform: the "
            f"intake's leads accepted/s in closed loop at 16 connections "
            f"({c['intake_leads_per_s']:,.0f}) and the pipeline's leads qualified/s working "
            f"through {c['backlog_at_start']:,} leads posted first "
            f"({c['pipeline_leads_per_s']:,.0f}, from the first stored batch until the backlog "
            f"ran out, {c['backlog_lasted_s']} s in): {c['capacity_leads_per_s']:,.0f} leads/s, "
            f"limited by the {c['limited_by']}."
        )
    if any(placement == "split" for placement, _ in runs):
        notes.append(
            "split cores: the API (gunicorn) and the embedded Redis on CPU 0; pools A, B, C, "
            "the control process and the embedded PostgreSQL on CPU 1; wrk where the kernel "
            "puts it (it stands for clients on other machines) — as a deployment puts the API, "
            "Redis and the workers on different hosts (bench/placement.py says why Redis goes "
            "with the API). Each run's multiples are of its own capacity."
        )
    if single["limited_by"] == "intake":
        notes.append(
            "Single leads: capacity is limited by the intake, so N × capacity offers N × what "
            "the API can answer at all. The requests it has no CPU for wait in the kernel's "
            "accept queue whatever admission decides (a 429 costs the API nearly what a 202 "
            "does), so the ACK latency there measures that queue, not the platform's overload "
            "control. Batches (an ad platform's or a scraper's way of sending) overload the "
            "pipeline instead, which is what admission is there to protect."
        )
    notes += [
        "ACK p99 counts requests never answered (wrk timeout 10 s, refused connections) as "
        "infinitely slow; 'missed' are scheduled requests never sent because every connection "
        "was waiting on the server; 'dropped_at_slice_end' were in flight when a "
        f"{config.overload_slice_seconds:g}-second slice ended: the server still admitted "
        "them (goodput counts them), but their wait, among the longest, is not in the ACK "
        "percentiles, which are therefore on the low side.",
        "Critical time to qualified = qualified_at − received_at in PostgreSQL for leads sent "
        "as critical and admitted as critical (qualified_at is taken when pool A starts the "
        "batch, before its commit).",
    ]
    if spike is not None:
        s = spike["figures"]
        activation, recovery = s["thin_activation_s"], s["recovery_s"]
        spike_batch = s["leads_per_request"] if s["leads_per_request"] > 1 else 0
        notes.append(
            f"spike ({_run_title('shared', spike_batch)}): "
            f"{s['offered_per_s']['spike']:,.0f} leads/s "
            f"({config.spike_multiplier:g}× capacity) for {s['spike_seconds']} s between "
            f"stretches at {config.spike_base:g}×: modes {s['modes']}; thin mode "
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

    def ack_text(name: str) -> str:
        ack = phases[name]["ack_p99_with_unanswered_ms"]
        return f"{ack:,.0f} ms" if ack is not None else "∞ (over 1 % never answered)"

    f = phases[top]
    headline = [
        f"single leads at {top}: ACK p99 {ack_text(top)}, {f['share_429'] or 0:.0%} answered "
        f"429, critical p99 {f.get('critical_p99_s')} s, goodput "
        f"{f['goodput_leads_per_s']:,.0f} leads/s",
        *(
            f"ACK p99 at {low}, {_run_title(p, b)}: {ack_text(low + run_suffix(p, b))}"
            for p, b in runs
        ),
    ]
    return {
        "title": "overload: leads offered at "
        + ", ".join(f"{m:g}×" for m in multipliers)
        + " capacity: "
        + "; ".join(_run_title(p, b) for p, b in runs),
        "unit": "per phase",
        "figures": phases,
        "reference": {"name": "capacity", **capacities["capacity"]},
        "references": capacities,
        "ratio": f["goodput_vs_capacity"],
        "headline": {
            "leadflow": "; ".join(headline),
            "reference": ", ".join(
                f"{ref['title'].removeprefix('measured ')} "
                f"{ref['figures']['capacity_leads_per_s']:,.0f} leads/s"
                for ref in capacities.values()
            ),
            "ratio": f"goodput {f['goodput_vs_capacity']} × capacity (single leads, {top})",
        },
        "targets": targets,
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
