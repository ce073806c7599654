"""batch: POST /api/v1/leads/batch with 500 leads a request, leads accepted per second; the
references take the same bodies: the usual DRF view (a many=True Serializer, SET NX per lead
in one pipeline, one apply_async per lead) and plain WSGI reading the body."""

from bench import seams
from bench.scenarios import (
    Context,
    api_url,
    app_api,
    measure,
    probe,
    ratio,
    reference_api,
    target,
    warm_up,
)

REFERENCES = ("drf_usual", "wsgi_hello")
REFERENCE_TITLES = {
    "drf_usual": "the usual DRF batch view: many=True Serializer, SET NX per lead, "
    "apply_async per lead",
    "wsgi_hello": "plain WSGI reading the body and answering 202 (counts requests × 500)",
}


def _measure(ctx: Context, name: str, service) -> dict:
    size = ctx.config.batch_size
    connections = ctx.config.batch_connections
    with ctx.stack(f"batch-{name}", max_seconds=600) as stack:
        stack.start(service)
        url = api_url(service)
        probe(ctx, service, batch_size=size)
        warm_up(ctx, url, connections=connections, batch_size=size)
        seams.state_reset()
        ctx.log(f"batch: {name}, {size} leads a request, {connections} connections")
        result = measure(
            ctx,
            url,
            ctx.config.seconds,
            slice_seconds=max(ctx.config.slice_seconds, 5),
            connections=connections,
            batch_size=size,
        )
    data = result.to_json()
    if name == "wsgi_hello":  # it says nothing about leads: every 202 stands for the whole body
        f = data["figures"]
        f["accepted_leads_per_s"] = round(f["ok_per_s"] * size, 1)
        for point in data["series"]:
            point["accepted_leads_per_s"] = round(point["ok_per_s"] * size, 1)
    return data


def run(ctx: Context) -> dict:
    runs = {"leadflow": _measure(ctx, "leadflow", app_api())}
    for kind in REFERENCES:
        runs[kind] = _measure(ctx, kind, reference_api(ctx, kind))
    value = runs["leadflow"]["figures"]["accepted_leads_per_s"]
    ratios = {k: ratio(value, runs[k]["figures"]["accepted_leads_per_s"]) for k in REFERENCES}
    c = str(ctx.config.batch_connections)
    return {
        "title": f"batch: POST /api/v1/leads/batch, {ctx.config.batch_size} leads a request",
        "unit": "leads accepted/s",
        "figures": runs["leadflow"]["figures"],
        "reference": {
            "name": "drf_usual",
            "title": REFERENCE_TITLES["drf_usual"],
            "figures": runs["drf_usual"]["figures"],
        },
        "ratio": ratios["drf_usual"],
        "references": {
            k: {"title": REFERENCE_TITLES[k], "figures": runs[k]["figures"]} for k in REFERENCES
        },
        "ratios": ratios,
        "targets": [target("leads/s", "≥ 50,000 leads/s", value, value >= 50_000)],
        "series": {k: {c: r["series"]} for k, r in runs.items()},
        "notes": [],
    }
