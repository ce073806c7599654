"""pipeline: leads/s from a backlog in the inboxes to every lead synced in PostgreSQL (dispatcher,
pools A, B and C on their local AI provider and CRM adapter); reference: psycopg COPY of the
same rows into the same table, measured in the same run.

Then each stage's service alone, in the bench process, on batches as the dispatcher makes them
(A qualify, B enrich, C sync): µs per lead of Python (this process's CPU) and of PostgreSQL (its
backend's CPU), and statements per batch; with each pool's CPU µs per lead in the whole run,
the figures a capacity model needs."""

import os
import time
from pathlib import Path

import psycopg

from bench import profile, seams
from bench.refs.copy_rows import CopyReference, table_truncate
from bench.scenarios import (
    Context,
    api_url,
    app_api,
    cpu_meter,
    inboxes_fill,
    ratio,
    target,
    watching,
)
from bench.stack import control_service, pool_service


def _fill(ctx: Context, stack, count: int) -> float:
    api = app_api()
    stack.start(api)
    seconds = inboxes_fill(ctx, api_url(api), count)
    stack.stop(api.name)
    waiting = seams.inbox_waiting()
    if waiting != count:
        raise RuntimeError(f"{count} leads posted but {waiting} wait in the inboxes")
    ctx.log(
        f"pipeline: {count} leads in the inboxes "
        f"({count / seconds:,.0f} leads/s through the batch API)"
    )
    return seconds


def _run_once(ctx: Context, count: int) -> dict:
    seams.state_reset()
    timeout = max(180.0, count / 100)
    with ctx.stack("pipeline", max_seconds=timeout + 300) as stack:
        _fill(ctx, stack, count)
        # Control runs before pool A starts, as in a running platform a backlog meets it
        # running: its start-up (the first tick pings the workers for a second to give them
        # their *.low consumers back) is not the pipeline's. Until pool A is ready only pool A's
        # watermark of batches leaves the inboxes, and none is qualified.
        stack.start(pool_service("b"), pool_service("c"), control_service(timeout + 60))
        seams.control_wait_ticked(30.0)
        meter = cpu_meter(ctx, stack)
        with watching(seams.synced_count) as watcher, watching(seams.qualified_count) as qualified:
            pool_a = pool_service("a")
            stack.start(pool_a)
            meter.start()
            started = time.monotonic()
            runs_before = seams.pool_task_runs()
            with profile.sampling(ctx, "pipeline", pool_a):
                done = watcher.wait_for(count, timeout)
            meter.stop()
            runs = seams.pool_task_runs()
            stored = watcher.latest()
            all_qualified = qualified.wait_for(count, 1.0)
        series = watcher.series(started)
        qualified_series = qualified.series(started)
    if done is None:
        raise RuntimeError(f"pipeline: {stored} of {count} leads synced after {timeout:.0f} s")
    seconds = done - started
    figures = {
        "leads": count,
        "seconds": round(seconds, 2),
        "leads_per_s": round(count / seconds, 1),
    }
    if all_qualified is not None:
        figures["qualified_all_after_s"] = round(all_qualified - started, 2)
    figures["cpu_cores"] = meter.cores
    # CPU per lead of each pool's processes (the capacity model's "CPU µs per lead per pool").
    figures["cpu_us_per_lead"] = {
        name: round(cpu * 1e6 / count, 1) for name, cpu in meter.cpu_seconds.items() if cpu > 0
    }
    figures["redis_commands"] = dict(list(meter.redis_commands.items())[:10])
    # Celery messages: one a task run of pools A, B and C (a retry runs again). Redis's CPU in
    # the run over them is at most what one message costs it (the dispatcher's claims and the
    # workers' events are in it too).
    read = set(runs) == set(runs_before) == {"a", "b", "c"}
    messages = sum(runs.values()) - sum(runs_before.values()) if read else 0
    if messages:
        figures["celery_messages"] = {pool: runs[pool] - runs_before[pool] for pool in runs}
        figures["leads_per_celery_message"] = round(count / messages, 1)
        redis_seconds = meter.cpu_seconds.get("redis (whole server)")
        if redis_seconds is not None:
            figures["redis_cpu_us_per_celery_message"] = round(redis_seconds * 1e6 / messages, 1)
    # The steady rate, between 10 % and 90 % of the leads synced (no start-up, no tail).
    low = next((p for p in series if p["count"] >= 0.1 * count), None)
    high = next((p for p in series if p["count"] >= 0.9 * count), None)
    if low and high and high["t"] > low["t"]:
        figures["steady_leads_per_s"] = round(
            (high["count"] - low["count"]) / (high["t"] - low["t"]), 1
        )
    return {"figures": figures, "series": series, "qualified_series": qualified_series}


def _copy_reference(ctx: Context, count: int) -> dict:
    """COPY of the leads the run left (all synced) into the emptied leads table, in batches of
    the dispatcher's size."""
    table, columns = seams.lead_table()
    batch = seams.dispatch_batch_max()
    with psycopg.connect(ctx.env["DATABASE_URL"]) as conn:
        reference = CopyReference(conn, table, columns)
        rows = len(reference.rows)
        sizes = [min(batch, rows - start) for start in range(0, rows, batch)]
        reference.truncate()
        timings = reference.timed(reference.batches(sizes))
        reference.truncate()
    seconds = sum(timings)
    ctx.log(f"pipeline: COPY of the same {rows} rows {rows / seconds:,.0f} rows/s")
    return {
        "rows": rows,
        "batches": len(sizes),
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds, 1),
    }


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _StageMeter:
    """Wall time, this process's CPU (Python, psycopg's client side included), its PostgreSQL
    backend's CPU and the statements sent, summed over the calls of one stage."""

    def __init__(self, backend_pid: int) -> None:
        self.backend_pid = backend_pid
        self.wall = self.python = self.postgres = 0.0
        self.statements = self.calls = self.leads = 0

    def run(self, work, items: list):
        if not items:
            return None
        with seams.statements_counted() as counted:
            wall, cpu = time.perf_counter(), time.process_time()
            backend = _cpu_seconds(self.backend_pid)
            result = work(items)
            self.postgres += _cpu_seconds(self.backend_pid) - backend
            self.python += time.process_time() - cpu
            self.wall += time.perf_counter() - wall
        self.statements += counted["statements"]
        self.calls += 1
        self.leads += len(items)
        return result

    def figures(self) -> dict:
        per_lead = 1e6 / self.leads if self.leads else 0.0
        return {
            "python_us": round(self.python * per_lead, 1),
            "postgres_us": round(self.postgres * per_lead, 1),
            "wall_us": round(self.wall * per_lead, 1),
            "queries_per_batch": round(self.statements / self.calls, 1) if self.calls else None,
            "batches": self.calls,
            "leads": self.leads,
        }


def _stage_costs(ctx: Context, count: int) -> dict:
    """Each stage's service on its own, on the batches pools A, B and C would get."""
    seams.state_reset()
    with ctx.stack("pipeline-stages", max_seconds=600) as stack:
        _fill(ctx, stack, count)
    batches = [seams.entries_decode(raw) for raw in seams.inbox_take(count)]
    # Warm-up (connections, caches, the scoring rules), then the measured pass on empty tables.
    to_enrich, to_sync = seams.leads_qualify_routed(batches[0])
    seams.leads_sync(seams.leads_enrich(to_enrich) + to_sync)
    table, _ = seams.lead_table()
    with psycopg.connect(ctx.env["DATABASE_URL"]) as conn:
        table_truncate(conn, table)
    pid = seams.database_backend_pid()
    a, b, c = _StageMeter(pid), _StageMeter(pid), _StageMeter(pid)
    for batch in batches:
        to_enrich, to_sync = a.run(seams.leads_qualify_routed, batch)
        # Pool A sends the leads under the threshold to C at once, the others through B.
        c.run(seams.leads_sync, to_sync)
        enriched = b.run(seams.leads_enrich, to_enrich) or []
        c.run(seams.leads_sync, enriched)
    synced = seams.synced_count()
    if synced != count:
        raise RuntimeError(f"pipeline stages: {synced} of {count} leads synced")
    return {"a": a.figures(), "b": b.figures(), "c": c.figures()}


def run(ctx: Context) -> dict:
    count = ctx.config.pipeline_leads
    main = _run_once(ctx, count)
    value = main["figures"]["leads_per_s"]
    ctx.log(f"pipeline: {value:,.0f} leads/s to synced")
    copy_figures = _copy_reference(ctx, count)
    ctx.log("pipeline: each stage alone, in the bench process")
    stages = _stage_costs(ctx, ctx.config.pipeline_stage_leads)
    main["figures"]["stages"] = stages
    ctx.measured["pipeline_leads_per_s"] = value
    r = ratio(value, copy_figures["rows_per_s"])
    main["figures"]["ratio_to_copy"] = r
    cpu_per_lead = main["figures"]["cpu_us_per_lead"]
    stage_line = "; ".join(
        f"{name.upper()} {s['python_us']:.0f} µs Python + {s['postgres_us']:.0f} µs PostgreSQL"
        for name, s in stages.items()
    )
    return {
        "title": "pipeline: inboxes → synced leads (dispatcher, pools A, B and C; local AI "
        "provider and CRM adapter)",
        "unit": "leads/s",
        "figures": main["figures"],
        "reference": {
            "name": "psycopg_copy",
            "title": "psycopg 3 COPY of the same rows into the leads table, batches of the "
            "dispatcher's size, one transaction each",
            "figures": copy_figures,
        },
        "ratio": r,
        "headline": {
            "leadflow": f"{value:,.0f} leads/s to synced",
            "reference": f"COPY {copy_figures['rows_per_s']:,.0f} rows/s",
            "ratio": f"{r} × COPY",
        },
        "targets": [
            target("to synced vs COPY", "≥ 0.25 ×", r, r is not None and r >= 0.25),
        ],
        "series": {"leadflow": main["series"], "qualified": main["qualified_series"]},
        "notes": [
            "COPY writes the finished lead rows only; the pipeline also writes each lead's "
            "enrichment and CRM sync rows and updates it twice.",
            f"Per lead, each stage alone on batches of the dispatcher's size: {stage_line} "
            "(figures.stages; Python is the bench process's CPU, psycopg's client side "
            "included; PostgreSQL its backend's CPU; queries_per_batch counts statements "
            "sent, a multi-statement round trip as one).",
            "CPU per lead in the run, by process group (figures.cpu_us_per_lead, µs): "
            + ", ".join(f"{name} {us:,.0f}" for name, us in cpu_per_lead.items())
            + ".",
            "Every lead qualified after "
            + (
                f"{main['figures']['qualified_all_after_s']} s"
                if "qualified_all_after_s" in main["figures"]
                else "(not seen)"
            )
            + f", every lead synced after {main['figures']['seconds']} s (series: qualified).",
            "The one-Celery-task-per-lead reference of earlier runs is no longer run: the "
            "reference is COPY, and the whole bench must stay ~25 min.",
        ],
    }
