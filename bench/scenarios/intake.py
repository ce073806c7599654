"""intake: single-lead POSTs (auth, validation, dedup, admission, inbox), req/s and p50/p99 at
each connection count, against three references under the same gunicorn configuration."""

from bench import profile, seams
from bench.scenarios import (
    Context,
    api_url,
    app_api,
    cpu_meter,
    measure,
    probe,
    ratio,
    reference_api,
    target,
    warm_up,
)

# The primary reference first: the usual DRF + SET NX + apply_async view.
REFERENCES = ("drf_usual", "drf_serializer", "django_min", "wsgi_hello")
REFERENCE_TITLES = {
    "drf_usual": "DRF view + Serializer + Redis SET NX dedup + Celery apply_async (the usual)",
    "drf_serializer": "DRF view + Serializer only",
    "django_min": "minimal Django view returning 202 JSON (no middleware)",
    "wsgi_hello": "plain WSGI hello-world (no Django)",
}


def _measure_api(ctx: Context, name: str, service, profile_name: str | None = None) -> dict:
    """Start the service, warm it up, measure it at each connection count, stop it."""
    per_connections = {}
    with ctx.stack(f"intake-{name}", max_seconds=600) as stack:
        stack.start(service)
        url = api_url(service)
        probe(ctx, service)
        warm_up(ctx, url, connections=ctx.config.connections[0])
        for connections in ctx.config.connections:
            seams.state_reset()  # the inboxes of the run before must not push back on this one
            ctx.log(f"intake: {name} at {connections} connections")
            with (
                cpu_meter(ctx, stack) as meter,
                profile.sampling(
                    ctx, profile_name if connections == ctx.config.connections[0] else None, service
                ),
            ):
                result = measure(ctx, url, ctx.config.seconds, connections=connections)
            per_connections[str(connections)] = result.to_json()
            per_connections[str(connections)]["figures"]["cpu_cores"] = meter.cores
    return per_connections


def run(ctx: Context) -> dict:
    runs = {"leadflow": _measure_api(ctx, "leadflow", app_api(), profile_name="intake")}
    for kind in REFERENCES:
        runs[kind] = _measure_api(ctx, kind, reference_api(ctx, kind))

    def ok_per_s(kind: str, connections: int) -> float | None:
        return runs[kind][str(connections)]["figures"]["ok_per_s"]

    first = ctx.config.connections[0]
    figures = {f"c{c}": runs["leadflow"][str(c)]["figures"] for c in ctx.config.connections}
    references = {
        kind: {f"c{c}": runs[kind][str(c)]["figures"] for c in ctx.config.connections}
        for kind in REFERENCES
    }
    ratios = {
        kind: {
            f"c{c}": ratio(ok_per_s("leadflow", c), ok_per_s(kind, c))
            for c in ctx.config.connections
        }
        for kind in REFERENCES
    }
    targets = []
    for c in ctx.config.connections:
        f = figures[f"c{c}"]
        targets.append(
            target(
                f"req/s at p99 ≤ 50 ms, {c} connections",
                "≥ 6,000 req/s (2xx) with p99 ≤ 50 ms",
                {"ok_per_s": f["ok_per_s"], "p99_ms": f["p99_ms"]},
                f["ok_per_s"] >= 6000 and f["p99_ms"] is not None and f["p99_ms"] <= 50,
            )
        )
    vs_django = ratios["django_min"][f"c{first}"]
    vs_usual = ratios["drf_usual"][f"c{first}"]
    targets.append(
        target(
            f"vs minimal Django view, {first} connections",
            "≥ 0.9 ×",
            vs_django,
            vs_django and vs_django >= 0.9,
        )
    )
    targets.append(
        target(
            f"vs the usual DRF + Celery view, {first} connections",
            "≥ 4 ×",
            vs_usual,
            vs_usual and vs_usual >= 4,
        )
    )
    notes = []
    for c in ctx.config.connections:
        f = figures[f"c{c}"]
        if f["answered"] and f["non_2xx"] / f["answered"] > 0.01:
            notes.append(
                f"LeadFlow answered {f['non_2xx']} non-2xx at {c} connections: {f['statuses']}"
            )
    return {
        "title": "intake: POST /api/v1/leads, one lead a request",
        "unit": "2xx answers/s",
        "figures": figures,
        "reference": {
            "name": "drf_usual",
            "title": REFERENCE_TITLES["drf_usual"],
            "figures": references["drf_usual"],
        },
        "ratio": vs_usual,
        "references": {
            k: {"title": REFERENCE_TITLES[k], "figures": v} for k, v in references.items()
        },
        "ratios": ratios,
        "targets": targets,
        "series": {kind: {c: r["series"] for c, r in per.items()} for kind, per in runs.items()},
        "notes": notes,
    }
