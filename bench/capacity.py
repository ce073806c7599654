"""The capacity model (README "Scaling out"): what one unit of each component carries, from
the costs this run measured, and which one a growing deployment meets first.

Every cost is CPU time per lead on this machine's cores, measured while the scenario ran:
- API: the gunicorn processes' CPU per request (intake, single leads) and per lead (batch);
- Redis: the server's CPU per admitted lead (intake, batch) and per lead moved through the
  pipeline (the dispatcher's claims, the Celery messages of pools A, B and C, their acks);
- PostgreSQL: the server's CPU per lead while the pipeline ran (all three stages' writes);
- pools: each pool's processes' CPU per lead.

One Redis is one core (its commands run on one thread); the API and the pools scale with
hosts; PostgreSQL with its cores, far less than linearly for writes to the same tables, which
is why the model gives one PostgreSQL core's figure and says so rather than guessing a curve.
"""


def _get(data: dict, *path, default=None):
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return default
        data = data[key]
    return data


def _per_core(us: float | None) -> float | None:
    return round(1e6 / us) if us else None


def model(results: dict) -> dict:
    """Rows {component, unit, us_per_lead, leads_per_s_per_unit, scales}; the first ceiling
    for single leads and for batches; absent figures (a scenario not run) leave rows out."""
    intake = _get(results, "intake", "figures", "c16") or {}
    batch = _get(results, "batch", "figures") or {}
    pipeline = _get(results, "pipeline", "figures") or {}
    pipeline_cores = pipeline.get("cpu_us_per_lead") or {}  # meter name -> CPU µs per lead
    rows = []

    def row(component: str, unit: str, us: float | None, scales: str) -> None:
        if us:
            rows.append(
                {
                    "component": component,
                    "unit": unit,
                    "us_per_lead": round(us, 1),
                    "leads_per_s_per_unit": _per_core(us),
                    "scales": scales,
                }
            )

    row("API, single leads", "core", intake.get("api_cpu_us_per_request"), "hosts × cores")
    row("API, batches", "core", batch.get("api_cpu_us_per_lead"), "hosts × cores")
    admit_single = intake.get("redis_cpu_us_per_lead")
    admit_batch = batch.get("redis_cpu_us_per_lead")
    moved = pipeline_cores.get("redis (whole server)")
    row("Redis: admission, single leads", "Redis", admit_single, "shards (tenant hash tag)")
    row("Redis: admission, batches", "Redis", admit_batch, "shards (tenant hash tag)")
    row("Redis: dispatch + Celery messages", "Redis", moved, "one broker Redis per pool")
    for pool in ("a", "b", "c"):
        row(f"pool {pool.upper()}", "core", pipeline_cores.get(f"pool-{pool}"), "workers")
    row("control (dispatcher)", "core", pipeline_cores.get("control"), "one leader")
    row(
        "PostgreSQL: all three stages",
        "core",
        pipeline_cores.get("postgres (whole server)"),
        "cores, sub-linearly; then per-tenant partitions",
    )
    ceilings = {}
    single_redis = (admit_single or 0) + (moved or 0)
    batch_redis = (admit_batch or 0) + (moved or 0)
    postgres = pipeline_cores.get("postgres (whole server)")
    for shape, redis_us in (("single leads", single_redis), ("batches", batch_redis)):
        candidates = {
            "one Redis (admission, inboxes and broker together)": _per_core(redis_us),
            "one PostgreSQL core": _per_core(postgres),
        }
        known = {k: v for k, v in candidates.items() if v}
        if known:
            first = min(known, key=known.get)
            ceilings[shape] = {"component": first, "leads_per_s": known[first], **known}
    messages = {
        key: pipeline[key]
        for key in ("leads_per_celery_message", "redis_cpu_us_per_celery_message")
        if key in pipeline
    }
    stages = {
        stage: {k: v for k, v in costs.items() if k in ("python_us", "postgres_us")}
        for stage, costs in (pipeline.get("stages") or {}).items()
    }
    return {"rows": rows, "first_ceiling": ceilings, "celery": messages, "stages": stages}


def markdown(capacity: dict) -> list[str]:
    if not capacity.get("rows"):
        return []
    out = [
        '## Capacity model (README "Scaling out")',
        "",
        "| component | CPU µs per lead | leads/s one unit carries | unit | scales with |",
        "|---|---|---|---|---|",
    ]
    for r in capacity["rows"]:
        out.append(
            f"| {r['component']} | {r['us_per_lead']:,} | {r['leads_per_s_per_unit']:,} "
            f"| {r['unit']} | {r['scales']} |"
        )
    out.append("")
    for shape, ceiling in capacity.get("first_ceiling", {}).items():
        out.append(
            f"- first ceiling, {shape}: {ceiling['component']} at "
            f"{ceiling['leads_per_s']:,} leads/s"
        )
    celery = capacity.get("celery") or {}
    if celery:
        out.append(
            f"- Celery: {celery.get('leads_per_celery_message')} leads a message; Redis CPU "
            f"{celery.get('redis_cpu_us_per_celery_message')} µs a message at most (all of "
            "Redis's CPU in the pipeline run over the messages)"
        )
    for stage, costs in (capacity.get("stages") or {}).items():
        out.append(
            f"- stage {stage.upper()} alone: {costs.get('python_us')} µs Python + "
            f"{costs.get('postgres_us')} µs PostgreSQL a lead"
        )
    return [*out, ""]
