"""The harness's knobs: the full run (`make chaos`), the short one (`make test`), the targets.

Durations are seconds. A fault window is how long the dependency stays broken; a kill is an
instant, repeated `rounds` times across the window. Every figure can be overridden from the
environment (CHAOS_RATE, CHAOS_SETTLE_SECONDS, ...) for trying the harness itself.
"""

from dataclasses import dataclass, field, replace

from leadflow.env import env_float, env_int, env_str

TERMINAL_STATUSES = ("synced", "failed", "duplicate", "dead_lettered")

# The targets of issue 11, for every experiment.
TARGET_RECOVERY_SECONDS = 60.0


@dataclass(frozen=True)
class Fault:
    """One experiment: what breaks, for how long."""

    name: str
    kind: str  # chaos.experiments.FAULTS key
    seconds: float  # the fault window (kills: the span over which rounds happen)
    rounds: int = 1  # kills only
    detail: dict = field(default_factory=dict)
    # The intake must refuse (503) while this fault lasts: Redis refuses writes.
    refuses_intake: bool = False
    # The health check after the experiment waits this long after the fault's end: a
    # PostgreSQL outage shows in the intake only once its tenant cache (30 s) has expired.
    check_after: float = 0.0


@dataclass(frozen=True)
class ChaosConfig:
    short: bool
    rate: float  # leads/s offered, all tenants together
    single_share: float  # share of those leads posted one per request; the rest in batches
    batch_size: int
    baseline_seconds: float  # load before the fault
    tail_seconds: float  # load after the fault ends, then the load stops
    settle_seconds: float  # after the fault ends, the longest wait for every lead to be terminal
    final_settle_seconds: float  # after the last experiment, before counting lost leads
    request_timeout: float  # a request unanswered this long counts as a hang
    workers_killed_share: float
    faults: tuple[Fault, ...]

    def fault(self, name: str) -> Fault:
        for fault in self.faults:
            if fault.name == name:
                return fault
        raise KeyError(name)


def _faults(short: bool) -> tuple[Fault, ...]:
    # The long outage outlasts the intake's tenant cache (30 s): keys must be served stale. The
    # short form keeps only that one (it passes through the cached phase too): CI's time.
    pg_stops = (35.0,) if short else (30.0, 75.0)
    dependency = 10.0 if short else 60.0
    # The short form (CI) keeps the faults only this harness can make (killed processes, stopped
    # servers, a full Redis) and one slow dependency; the AI's and the CRM's other faults have
    # live-stack tests of their own (tests/crm/test_isolation_live.py, tests/enrichment/).
    full_only = (
        Fault("ai-down", "ai_down", dependency),
        # Slower than the provider's timeout (2 s by default): every call times out.
        Fault("ai-slow", "ai_slow", dependency, detail={"latency_ms": 5000}),
        Fault("crm-failing", "crm_failing", dependency, detail={"failure_status": 503}),
        Fault("crm-huge", "crm_huge", dependency, detail={"body_bytes": 30 * 1024 * 1024}),
    )
    return (
        Fault("workers-kill", "workers_kill", 10.0 if short else 30.0, rounds=2 if short else 3),
        Fault("control-kill", "control_kill", 0.0),
        Fault("redis-kill", "redis_kill", 10.0),
        *(
            Fault(f"postgres-stop-{pg:.0f}s", "postgres_stop", pg, check_after=35.0)
            for pg in pg_stops
        ),
        # Slower than the CRM timeout (5 s on main, 10 s with total deadlines).
        Fault("crm-slow", "crm_slow", dependency, detail={"latency_ms": 15000}),
        *(() if short else full_only),
        Fault("redis-maxmemory", "redis_maxmemory", 10.0 if short else 30.0, refuses_intake=True),
    )


def config_for(short: bool) -> ChaosConfig:
    config = ChaosConfig(
        short=short,
        rate=60.0 if short else 200.0,
        single_share=0.5,
        batch_size=20,
        baseline_seconds=2.0 if short else 10.0,
        tail_seconds=2.0 if short else 10.0,
        # At least the recovery target: "stuck" is then "not terminal within the target".
        settle_seconds=60.0 if short else 120.0,
        final_settle_seconds=30.0 if short else 120.0,
        request_timeout=10.0,
        workers_killed_share=0.3,
        faults=_faults(short),
    )
    return replace(
        config,
        rate=env_float("CHAOS_RATE", config.rate),
        baseline_seconds=env_float("CHAOS_BASELINE_SECONDS", config.baseline_seconds),
        tail_seconds=env_float("CHAOS_TAIL_SECONDS", config.tail_seconds),
        settle_seconds=env_float("CHAOS_SETTLE_SECONDS", config.settle_seconds),
        final_settle_seconds=env_float("CHAOS_FINAL_SETTLE_SECONDS", config.final_settle_seconds),
    )


def proxy_redis_db() -> int:
    """The Redis database of the harness on a server it shares (DATABASE_URL / REDIS_URL set)."""
    return env_int("CHAOS_REDIS_DB", 11)


def proxy_database_name() -> str:
    return env_str("CHAOS_DATABASE_NAME", "leadflow_chaos")
