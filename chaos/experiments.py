"""The faults, one function each: break something, hold it for the fault's window, mend it.

Each returns a FaultRun: when the fault began and ended (monotonic) and what was done. For a
kill, the fault ends at the last kill (the supervisor restarts the process; recovery counts
from the kill); for an outage, it ends once the dependency answers again.
"""

import contextlib
import itertools
import math
import os
import random
import signal
import time
from dataclasses import dataclass, field

import httpx

from chaos.config import Fault

# Far under what the platform's Redis holds (several MB): full from the first write.
MAXMEMORY_LOW = 1024 * 1024


@dataclass
class FaultRun:
    start: float
    end: float
    actions: list[str] = field(default_factory=list)
    skipped: str | None = None  # why the fault could not be applied


@dataclass
class Context:
    platform: object  # chaos.platform.Platform
    postgres: object  # chaos.services.PrivatePostgres | ProxiedPostgres
    redis: object  # chaos.services.PrivateRedis | ProxiedRedis
    ai: object  # chaos.platform.HttpDouble
    crm: object  # chaos.platform.HttpDouble
    config: object  # chaos.config.ChaosConfig
    rng: random.Random = field(default_factory=lambda: random.Random(7))


def _since(start: float) -> str:
    return f"+{time.monotonic() - start:.1f}s"


def workers_kill(ctx: Context, fault: Fault) -> FaultRun:
    """SIGKILL a share of the worker processes, `rounds` times across the window; each round
    takes the next ones of a shuffled list, so every pool is hit when there are enough rounds."""
    run = FaultRun(time.monotonic(), 0.0)
    gap = fault.seconds / max(fault.rounds - 1, 1)
    kinds = sorted({label.split(" child")[0] for label, _ in ctx.platform.worker_targets()})
    ctx.rng.shuffle(kinds)
    next_kind = itertools.cycle(kinds)
    for round_index in range(fault.rounds):
        if round_index:
            time.sleep(max(run.start + round_index * gap - time.monotonic(), 0))
        targets = dict(ctx.platform.worker_targets())
        count = math.ceil(ctx.config.workers_killed_share * len(targets))
        chosen = []
        for _ in range(len(kinds) * count):
            if len(chosen) == count:
                break
            kind = next(next_kind)
            candidates = sorted(label for label in targets if label.startswith(kind))
            if candidates:
                label = ctx.rng.choice(candidates)
                chosen.append((label, targets.pop(label)))
        for label, pid in chosen:
            if pid is None:
                pid = ctx.platform.kill_command(label)
            else:
                _kill(pid)
            run.actions.append(
                f"{_since(run.start)} SIGKILL {label} (pid {pid}; {count} this round)"
            )
        run.end = time.monotonic()
    return run


def control_kill(ctx: Context, fault: Fault) -> FaultRun:
    run = FaultRun(time.monotonic(), 0.0)
    pid = ctx.platform.kill_command("control")
    if pid is None:
        run.skipped = "the control process was not running"
    else:
        run.actions.append(f"SIGKILL control (pid {pid})")
    run.end = time.monotonic()
    return run


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _outage(service, fault: Fault) -> FaultRun:
    run = FaultRun(time.monotonic(), 0.0)
    run.actions.append(f"{service.name} {service.outage_begin()}")
    time.sleep(max(run.start + fault.seconds - time.monotonic(), 0))
    restart = time.monotonic()
    service.outage_end()
    run.end = time.monotonic()
    run.actions.append(
        f"{_since(run.start)} {service.name} back (took {run.end - restart:.1f} s to answer)"
    )
    return run


def redis_kill(ctx: Context, fault: Fault) -> FaultRun:
    return _outage(ctx.redis, fault)


def postgres_stop(ctx: Context, fault: Fault) -> FaultRun:
    return _outage(ctx.postgres, fault)


def ai_down(ctx: Context, fault: Fault) -> FaultRun:
    run = FaultRun(time.monotonic(), 0.0)
    ctx.ai.kill()
    run.actions.append("AI provider double SIGKILLed (connections refused)")
    time.sleep(max(run.start + fault.seconds - time.monotonic(), 0))
    ctx.ai.start()
    run.end = time.monotonic()
    run.actions.append(f"{_since(run.start)} AI provider double back")
    return run


def _behaviour(double, kind: str, fault: Fault, during: dict, after: dict) -> FaultRun:
    run = FaultRun(time.monotonic(), 0.0)
    double.configure(kind, **during)
    run.actions.append(f"{kind} double: {during}")
    time.sleep(max(run.start + fault.seconds - time.monotonic(), 0))
    double.configure(kind, **after)
    run.end = time.monotonic()
    run.actions.append(f"{_since(run.start)} {kind} double: {after}")
    return run


def ai_slow(ctx: Context, fault: Fault) -> FaultRun:
    return _behaviour(ctx.ai, "ai", fault, fault.detail, {"latency_ms": 0})


def crm_slow(ctx: Context, fault: Fault) -> FaultRun:
    return _behaviour(ctx.crm, "crm", fault, fault.detail, {"latency_ms": 0})


def crm_failing(ctx: Context, fault: Fault) -> FaultRun:
    during = {"failure_rate": 1.0, **fault.detail}
    return _behaviour(ctx.crm, "crm", fault, during, {"failure_rate": 0.0})


def crm_huge(ctx: Context, fault: Fault) -> FaultRun:
    ctx.crm.configure("crm", **fault.detail)
    declared = _probe_reply_size(ctx.crm.url)
    if declared < fault.detail["body_bytes"]:
        ctx.crm.configure("crm", body_bytes=0)
        now = time.monotonic()
        return FaultRun(
            now,
            now,
            skipped=(
                "the HTTP double (tests/doubles/http_double.py) cannot answer huge bodies here: "
                f"asked for {fault.detail['body_bytes']} bytes, its reply declared {declared}"
            ),
        )
    ctx.crm.configure("crm", body_bytes=0)
    return _behaviour(ctx.crm, "crm", fault, fault.detail, {"body_bytes": 0})


def _probe_reply_size(url: str) -> int:
    """The Content-Length the CRM double declares for a reply now (the body is not read)."""
    with (
        httpx.Client(timeout=10.0) as client,
        client.stream("POST", f"{url}/crm/chaos-probe", json={"leads": []}) as response,
    ):
        return int(response.headers.get("content-length", 0))


def redis_maxmemory(ctx: Context, fault: Fault) -> FaultRun:
    now = time.monotonic()
    if ctx.redis.kind != "private":
        return FaultRun(
            now,
            now,
            skipped="needs the harness's own Redis: CONFIG SET maxmemory on a shared server "
            "would fill it for every other user",
        )
    admin = ctx.redis.admin()
    run = FaultRun(now, 0.0)
    used = int(admin.info("memory")["used_memory"])
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", str(MAXMEMORY_LOW))
    run.actions.append(
        f"maxmemory {MAXMEMORY_LOW} bytes with {used} used, noeviction: every write that may "
        "grow memory is refused"
    )
    time.sleep(max(run.start + fault.seconds - time.monotonic(), 0))
    used_at_end = int(admin.info("memory")["used_memory"])
    admin.config_set("maxmemory", "0")
    run.end = time.monotonic()
    run.actions.append(
        f"{_since(run.start)} maxmemory 0 (no limit); {used_at_end} bytes used at the end "
        f"({used_at_end - used:+d})"
    )
    admin.close()
    return run


FAULTS = {
    "workers_kill": workers_kill,
    "control_kill": control_kill,
    "redis_kill": redis_kill,
    "postgres_stop": postgres_stop,
    "ai_down": ai_down,
    "ai_slow": ai_slow,
    "crm_slow": crm_slow,
    "crm_failing": crm_failing,
    "crm_huge": crm_huge,
    "redis_maxmemory": redis_maxmemory,
}
