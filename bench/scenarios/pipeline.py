"""pipeline: leads/s from the inboxes to qualified rows in PostgreSQL (dispatcher + pool A,
scoring included, B and C running on their local providers); reference: the same work as one
Celery task per lead."""

import contextlib
import time

import orjson

from bench import profile, seams
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
from bench.stack import Service, celery_argv, control_service, pool_service, procfile_command


def _per_lead_worker() -> Service:
    from bench.refs.per_lead import QUEUE

    return Service(
        name="per-lead",
        argv=celery_argv("pool-a", "per-lead", app="bench.refs.per_lead", queues=QUEUE),
        ready_text="ready.",
        env=procfile_command("pool-a")[0],
    )


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


def _run_once(ctx: Context, count: int, reference: bool) -> dict:
    seams.state_reset()
    timeout = max(180.0, count / 200)
    name = "pipeline-per-lead" if reference else "pipeline"
    with ctx.stack(name, max_seconds=timeout + 300) as stack:
        _fill(ctx, stack, count)
        stack.start(pool_service("b"), pool_service("c"))
        meter = cpu_meter(ctx, stack)
        with watching(seams.qualified_count) as watcher, contextlib.ExitStack() as extra:
            if reference:
                from bench.refs.per_lead import qualify_lead

                stack.start(_per_lead_worker())
                meter.start()
                started = time.monotonic()
                # The usual dispatcher: every lead its own message.
                for batch in seams.inbox_take(count):
                    for raw in batch:
                        entry = raw.decode()
                        tier = orjson.loads(raw)["tier"]
                        qualify_lead.apply_async(args=[entry, tier], queue="bench.per_lead")
                published = time.monotonic() - started
            else:
                pool_a = pool_service("a")
                stack.start(pool_a)
                meter.start()
                stack.start(control_service(timeout + 60))
                started = time.monotonic()
                published = None
                extra.enter_context(profile.sampling(ctx, "pipeline", pool_a))
            done = watcher.wait_for(count, timeout)
            meter.stop()
            stored = watcher.latest()
        series = watcher.series(started)
    if done is None:
        raise RuntimeError(f"{name}: {stored} of {count} leads qualified after {timeout:.0f} s")
    seconds = done - started
    figures = {
        "leads": count,
        "seconds": round(seconds, 2),
        "leads_per_s": round(count / seconds, 1),
    }
    figures["cpu_cores"] = meter.cores
    if published is not None:
        figures["publish_seconds"] = round(published, 2)
    # The steady rate, between 10 % and 90 % of the leads stored (no start-up, no tail).
    low = next((p for p in series if p["count"] >= 0.1 * count), None)
    high = next((p for p in series if p["count"] >= 0.9 * count), None)
    if low and high and high["t"] > low["t"]:
        figures["steady_leads_per_s"] = round(
            (high["count"] - low["count"]) / (high["t"] - low["t"]), 1
        )
    return {"figures": figures, "series": series}


def run(ctx: Context) -> dict:
    main = _run_once(ctx, ctx.config.pipeline_leads, reference=False)
    ctx.log(f"pipeline: {main['figures']['leads_per_s']:,.0f} leads/s")
    ref = _run_once(ctx, ctx.config.pipeline_reference_leads, reference=True)
    ctx.log(f"pipeline: one task per lead {ref['figures']['leads_per_s']:,.0f} leads/s")
    value = main["figures"]["leads_per_s"]
    ctx.measured["pipeline_leads_per_s"] = value
    r = ratio(value, ref["figures"]["leads_per_s"])
    return {
        "title": "pipeline: inboxes → qualified rows (dispatcher + pool A; B and C running)",
        "unit": "leads/s",
        "figures": main["figures"],
        "reference": {
            "name": "celery_task_per_lead",
            "title": "pool A's task body, one Celery task per lead (pool A's worker options)",
            "figures": ref["figures"],
        },
        "ratio": r,
        "headline": {
            "leadflow": f"{value:,.0f} leads/s",
            "reference": f"one task per lead {ref['figures']['leads_per_s']:,.0f} leads/s",
            "ratio": f"{r} × one task per lead",
        },
        "targets": [
            target("leads/s", "≥ 20,000 leads/s", value, value >= 20_000),
            target("vs one task per lead", "≥ 12 ×", r, r is not None and r >= 12),
        ],
        "series": {"leadflow": main["series"], "celery_task_per_lead": ref["series"]},
        "notes": [],
    }
