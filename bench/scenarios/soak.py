"""soak (only when asked: SCENARIO=soak): the whole platform at 70 % of its measured capacity
for 30 minutes (BENCH_SOAK_SECONDS), the RSS of every process sampled; growth after warm-up."""

import threading
import time

from bench import load, seams
from bench.scenarios import Context, target, watching
from bench.scenarios.overload import capacity_probe, platform, rss_sample


def _growth(samples: list[tuple[float, dict]], warm_until: float) -> dict:
    """Per process alive from the end of warm-up to the end: growth of its RSS."""
    after = [(t, s) for t, s in samples if t >= warm_until]
    if len(after) < 2:
        return {}
    first, last = after[0][1], after[-1][1]
    growth = {}
    for service, pids in last.items():
        for pid, rss in pids.items():
            start = first.get(service, {}).get(pid)
            if start:
                growth[f"{service}/{pid}"] = round(rss / start - 1, 4)
    return growth


def run(ctx: Context) -> dict:
    config = ctx.config
    capacity = capacity_probe(ctx)["capacity_leads_per_s"]
    if not capacity:
        raise RuntimeError("no lead was qualified while measuring capacity")
    rate = config.soak_load * capacity
    seconds = config.soak_seconds
    interval = 5.0 if seconds < 600 else 10.0
    samples: list[tuple[float, dict]] = []
    stop = threading.Event()
    ctx.log(f"soak: {rate:,.0f} leads/s ({config.soak_load:.0%} of capacity) for {seconds:.0f} s")
    with platform(ctx, "soak", seconds + 600) as (stack, api):
        origin = time.monotonic()

        def sample() -> None:
            while not stop.is_set():
                samples.append((time.monotonic() - origin, rss_sample(stack)))
                stop.wait(interval)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        spec = load.LoadSpec(
            url=f"http://127.0.0.1:{api.http_port}",
            keys=ctx.keys,
            connections=64,
            threads=1,
            rate=rate,
            critical_permille=config.overload_critical_permille,
            timeout_seconds=10,
        )
        try:
            with watching(seams.qualified_count, interval=1.0) as watcher:
                result = load.run(spec, seconds, ctx.run_dir / "wrk", max(10.0, seconds / 120))
                goodput = watcher.rate_between(origin, time.monotonic())
            rows = watcher.series(origin, window=10.0)
        finally:
            stop.set()
            sampler.join(timeout=30)
        api_master = min(api.pids(), default=None)
    warm_until = seconds * 0.2
    growth = _growth(samples, warm_until)
    worst = max(growth.items(), key=lambda item: item[1], default=(None, None))
    api_workers = [
        rss
        for _, sample in samples
        for pid, rss in sample.get("api", {}).items()
        if pid != api_master
    ]
    api_max = round(max(api_workers), 1) if api_workers else None
    rss_series = {
        service: [(round(t, 1), round(sum(s.get(service, {}).values()), 1)) for t, s in samples]
        for service in sorted({name for _, s in samples for name in s})
    }
    figures = {
        **result.figures(),
        "capacity_leads_per_s": capacity,
        "goodput_leads_per_s": goodput and round(goodput, 1),
        "warm_up_seconds": warm_until,
        "max_rss_growth": worst[1],
        "max_rss_growth_process": worst[0],
        "api_worker_rss_max_mb": api_max,
        "rss_growth_by_process": growth,
    }
    return {
        "title": f"soak: {config.soak_load:.0%} of capacity for {seconds:.0f} s",
        "unit": "RSS",
        "figures": figures,
        "headline": {
            "leadflow": f"worst RSS growth after warm-up {worst[1]:.1%} ({worst[0]}), "
            f"API worker RSS ≤ {api_max} MB, {rate:,.0f} leads/s offered"
            if worst[1] is not None
            else "no RSS samples",
            "reference": f"capacity {capacity:,.0f} leads/s",
            "ratio": f"{config.soak_load:.0%} of capacity for {seconds:.0f} s",
        },
        "targets": [
            target(
                "RSS growth after warm-up, worst process",
                "≤ 5 %",
                worst[1],
                worst[1] is not None and worst[1] <= 0.05,
            ),
            target("API worker RSS", "≤ 150 MB", api_max, api_max is not None and api_max <= 150),
        ],
        "series": {
            "soak": {
                "load": result.series(),
                "rows": rows,
                "offered_per_s": rate,
                "rss": rss_series,
            }
        },
        "notes": [
            "Growth compares each process's RSS at the end of warm-up (the first 20 %) with its "
            "last sample; prefork children recycled in between are not compared.",
            "RSS series in the plot are totals per service (master and children).",
        ],
    }
