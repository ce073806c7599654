"""durability: the cost of `appendfsync always` (README "Outages"): single-lead POSTs to the
intake, as in the intake scenario, with Redis fsyncing every write before it answers, against
the default `appendfsync everysec` (which can lose up to ~1 s of leads already answered 202 on
a power loss or a kernel crash).

Two embedded Redis servers (leadflow/devstack.py: AOF on, noeviction), one per appendfsync,
with their data in the run's directory (on the checkout's disk, where `make run` keeps its
own), each behind its own LeadFlow API (the Procfile's api line, LEADFLOW_REDIS_CHECKS=strict
with LEADFLOW_REDIS_APPENDFSYNC set, so each API checks its server runs as named). Their wrk
slices take turns, so machine drift falls on both alike; the ratio always ÷ everysec is the
price. The figure depends on the disk's fsync latency far more than on LeadFlow.
"""

import shutil

import redis

from bench import load
from bench.scenarios import INTAKE_ONLY_ENV, Context, api_url, app_api, probe, ratio
from bench.stack import free_port
from leadflow.embedded import EmbeddedRedis

VARIANTS = ("everysec", "always")


def _fsyncs(url: str) -> dict:
    """What the server says about its AOF after the run (for the report)."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        persistence = client.info("persistence")
        return {
            "appendfsync": client.config_get("appendfsync")["appendfsync"],
            "aof_current_size": persistence.get("aof_current_size"),
            "aof_delayed_fsync": persistence.get("aof_delayed_fsync"),
        }
    finally:
        client.close()


def run(ctx: Context) -> dict:
    connections = ctx.config.connections[0]
    servers: dict[str, EmbeddedRedis] = {}
    urls: dict[str, str] = {}
    aof: dict[str, dict] = {}
    try:
        for fsync in VARIANTS:
            data_dir = ctx.run_dir / f"redis-{fsync}"
            shutil.rmtree(data_dir, ignore_errors=True)
            servers[fsync] = EmbeddedRedis(data_dir=data_dir, port=free_port(), appendfsync=fsync)
            urls[fsync] = servers[fsync].ensure()
        services = {
            fsync: app_api(
                f"leadflow-{fsync}",
                {
                    **INTAKE_ONLY_ENV,
                    "REDIS_URL": urls[fsync],
                    "LEADFLOW_REDIS_CHECKS": "strict",
                    "LEADFLOW_REDIS_APPENDFSYNC": fsync,
                },
            )
            for fsync in VARIANTS
        }
        with ctx.stack("durability", max_seconds=1800) as stack:
            stack.start(*services.values())
            for service in services.values():
                probe(ctx, service)
            specs = {
                fsync: load.LoadSpec(
                    url=api_url(service),
                    keys=ctx.keys,
                    connections=connections,
                    threads=ctx.config.wrk_threads,
                )
                for fsync, service in services.items()
            }
            if ctx.config.warmup_seconds:
                load.run_interleaved(specs, ctx.config.warmup_seconds, ctx.run_dir / "wrk", 1.0)
            ctx.log(f"durability: everysec and always at {connections} connections, taking turns")
            results = load.run_interleaved(
                specs, ctx.config.seconds, ctx.run_dir / "wrk", ctx.config.slice_seconds
            )
        aof = {fsync: _fsyncs(url) for fsync, url in urls.items()}
    finally:
        for server in servers.values():
            server.stop()

    runs = {fsync: result.to_json() for fsync, result in results.items()}
    always, everysec = runs["always"]["figures"], runs["everysec"]["figures"]
    price = ratio(always["ok_per_s"], everysec["ok_per_s"])
    return {
        "title": "durability: the intake with Redis appendfsync always vs everysec",
        "unit": "2xx answers/s",
        "figures": {f"c{connections}": always},
        "reference": {
            "name": "everysec",
            "title": "the same intake on Redis with appendfsync everysec (the default)",
            "figures": {f"c{connections}": everysec},
        },
        "ratio": price,
        "ratios": {"everysec": {f"c{connections}": price}},
        "headline": {
            "leadflow": f"always: {always['ok_per_s']:,.0f} req/s, p99 {always['p99_ms']} ms "
            f"({connections} conn.)",
            "reference": f"everysec: {everysec['ok_per_s']:,.0f} req/s, "
            f"p99 {everysec['p99_ms']} ms",
            "ratio": f"{price} × (always ÷ everysec)",
        },
        "targets": [],
        "series": {fsync: {str(connections): run_["series"]} for fsync, run_ in runs.items()},
        "aof": aof,
        "notes": [
            "Each variant has its own embedded Redis (AOF in the run's directory) and its own "
            "API; their wrk slices take turns. The price is the disk's fsync latency on every "
            "admission: on a disk with a write cache that honours flushes quickly it is small, "
            "on network storage large. README 'Outages' says when to choose always.",
        ],
    }
