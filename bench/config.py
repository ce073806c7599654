"""The bench's knobs, read from the environment (all optional); BENCH_QUICK=1 shortens every run."""

from dataclasses import asdict, dataclass

from leadflow.env import env_bool, env_float, env_int, env_str

SCENARIOS_DEFAULT = (
    "intake",
    "batch",
    "pipeline",
    "writes",
    "overload",
    "forecast",
    "durability",
)
SCENARIOS_ALL = (*SCENARIOS_DEFAULT, "soak")


def _ints(name: str, default: str) -> tuple[int, ...]:
    return tuple(int(part) for part in env_str(name, default).split(",") if part.strip())


def _floats(name: str, default: str) -> tuple[float, ...]:
    return tuple(float(part) for part in env_str(name, default).split(",") if part.strip())


@dataclass(frozen=True)
class BenchConfig:
    seconds: float  # each measured load run (intake, batch: per target and connection count)
    warmup_seconds: float
    slice_seconds: float  # the time resolution of the plots
    connections: tuple[int, ...]  # intake
    wrk_threads: int
    batch_connections: int
    batch_size: int
    pipeline_leads: int
    pipeline_stage_leads: int
    writes_leads: int
    capacity_seconds: float
    capacity_backlog: int  # leads waiting when the capacity probe starts
    overload_seconds: float
    overload_multipliers: tuple[float, ...]
    overload_slice_seconds: float
    overload_critical_permille: int
    overload_max_connections: int
    overload_placements: tuple[str, ...]  # bench/placement.py: "shared", "split"
    overload_batch_size: int  # leads a request in the batch runs (0: single leads only)
    forecast_base_rate: float  # leads/s before the rise to 10 ×
    forecast_warmup_seconds: float
    forecast_rise_seconds: float
    forecast_hold_seconds: float
    # The spike phase of overload: `spike_multiplier` × capacity for `spike_seconds` between
    # `spike_base` × capacity before and after (after: long enough to see the recovery).
    spike_multiplier: float  # 0: no spike phase
    spike_base: float
    spike_before_seconds: float
    spike_seconds: float
    spike_after_seconds: float
    spike_slice_seconds: float
    soak_seconds: float
    soak_load: float  # share of capacity
    tenants: int
    database_name: str
    redis_db: int
    profile: bool  # py-spy the API and pool A while they are measured

    def to_json(self) -> dict:
        return asdict(self)


def config_from_env() -> BenchConfig:
    quick = env_bool("BENCH_QUICK", False)
    return BenchConfig(
        seconds=env_float("BENCH_SECONDS", 4 if quick else 10),
        warmup_seconds=env_float("BENCH_WARMUP_SECONDS", 1 if quick else 2),
        slice_seconds=env_float("BENCH_SLICE_SECONDS", 2),
        connections=_ints("BENCH_CONNECTIONS", "16,64"),
        wrk_threads=env_int("BENCH_WRK_THREADS", 1),
        batch_connections=env_int("BENCH_BATCH_CONNECTIONS", 4),
        batch_size=env_int("BENCH_BATCH_SIZE", 500),
        pipeline_leads=env_int("BENCH_PIPELINE_LEADS", 10_000 if quick else 60_000),
        pipeline_stage_leads=env_int("BENCH_PIPELINE_STAGE_LEADS", 5_000 if quick else 20_000),
        writes_leads=env_int("BENCH_WRITES_LEADS", 10_000 if quick else 50_000),
        capacity_seconds=env_float("BENCH_CAPACITY_SECONDS", 8 if quick else 20),
        capacity_backlog=env_int("BENCH_CAPACITY_BACKLOG", 20_000 if quick else 100_000),
        overload_seconds=env_float("BENCH_OVERLOAD_SECONDS", 10 if quick else 60),
        overload_multipliers=_floats("BENCH_OVERLOAD_MULTIPLIERS", "2,5"),
        overload_slice_seconds=env_float("BENCH_OVERLOAD_SLICE_SECONDS", 5 if quick else 15),
        overload_critical_permille=env_int("BENCH_OVERLOAD_CRITICAL_PERMILLE", 50),
        overload_max_connections=env_int("BENCH_OVERLOAD_MAX_CONNECTIONS", 512),
        overload_batch_size=env_int("BENCH_OVERLOAD_BATCH_SIZE", 20),
        overload_placements=tuple(
            p.strip()
            for p in env_str("BENCH_OVERLOAD_PLACEMENTS", "shared,split").split(",")
            if p.strip()
        ),
        forecast_base_rate=env_float("BENCH_FORECAST_BASE_RATE", 30),
        forecast_warmup_seconds=env_float("BENCH_FORECAST_WARMUP_SECONDS", 30 if quick else 90),
        forecast_rise_seconds=env_float("BENCH_FORECAST_RISE_SECONDS", 60 if quick else 180),
        # Long enough for the forecasts of the rise to be checked 5 minutes on.
        forecast_hold_seconds=env_float("BENCH_FORECAST_HOLD_SECONDS", 300),
        spike_multiplier=env_float("BENCH_SPIKE_MULTIPLIER", 10),
        spike_base=env_float("BENCH_SPIKE_BASE", 0.5),
        spike_before_seconds=env_float("BENCH_SPIKE_BEFORE_SECONDS", 10 if quick else 20),
        spike_seconds=env_float("BENCH_SPIKE_SECONDS", 5 if quick else 15),
        spike_after_seconds=env_float("BENCH_SPIKE_AFTER_SECONDS", 60 if quick else 240),
        spike_slice_seconds=env_float("BENCH_SPIKE_SLICE_SECONDS", 5),
        soak_seconds=env_float("BENCH_SOAK_SECONDS", 120 if quick else 1800),
        soak_load=env_float("BENCH_SOAK_LOAD", 0.7),
        tenants=env_int("BENCH_TENANTS", 4),
        database_name=env_str("BENCH_DATABASE_NAME", "leadflow_bench"),
        redis_db=env_int("BENCH_REDIS_DB", 12),
        profile=env_bool("BENCH_PROFILE", False),
    )


# Admission limits of the bench tenants, set on whichever fields the Tenant model has: high
# enough that the intake and batch scenarios measure the intake, not a tenant's quota.
TENANT_LIMITS = {
    "rate_limit_per_second": 1_000_000,
    "hourly_budget": 1_000_000_000,
    "critical_capacity": 1_000_000,
    "critical_refill_per_second": 100_000.0,
}
