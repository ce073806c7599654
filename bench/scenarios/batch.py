"""batch: POST /api/v1/leads/batch with 500 leads a request, leads accepted per second; the
references take the same bodies: the usual DRF view (a many=True Serializer, SET NX per lead
in one pipeline, one apply_async per lead) and plain WSGI reading the body."""

from bench.scenarios import Context, ratio, target
from bench.scenarios.intake import measure_side_by_side

REFERENCES = ("drf_usual", "wsgi_hello")
REFERENCE_TITLES = {
    "drf_usual": "the usual DRF batch view: many=True Serializer, SET NX per lead, "
    "apply_async per lead",
    "wsgi_hello": "plain WSGI reading the body and answering 202 (counts requests × 500)",
}


def run(ctx: Context) -> dict:
    size = ctx.config.batch_size
    c = str(ctx.config.batch_connections)
    measured = measure_side_by_side(
        ctx,
        "batch",
        ("leadflow", *REFERENCES),
        ctx.config.seconds,
        max(ctx.config.slice_seconds, 5),
        (ctx.config.batch_connections,),
        batch_size=size,
    )
    runs = {name: per[c] for name, per in measured.items()}
    # Plain WSGI knows nothing of leads: each 202 stands for the whole body.
    hello = runs["wsgi_hello"]
    hello["figures"]["accepted_leads_per_s"] = round(hello["figures"]["ok_per_s"] * size, 1)
    if hello["figures"].get("ok_per_cpu_s"):
        hello["figures"]["accepted_leads_per_cpu_s"] = round(
            hello["figures"]["ok_per_cpu_s"] * size, 1
        )
    for point in hello["series"]:
        point["accepted_leads_per_s"] = round(point["ok_per_s"] * size, 1)
    value = runs["leadflow"]["figures"]["accepted_leads_per_s"]
    ratios = {k: ratio(value, runs[k]["figures"]["accepted_leads_per_s"]) for k in REFERENCES}
    ratios_per_cpu = {
        k: ratio(
            runs["leadflow"]["figures"].get("accepted_leads_per_cpu_s"),
            runs[k]["figures"].get("accepted_leads_per_cpu_s"),
        )
        for k in REFERENCES
    }
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
        "headline": {
            "leadflow": f"{value:,.0f} leads/s",
            "reference": "usual DRF batch view "
            f"{runs['drf_usual']['figures']['accepted_leads_per_s']:,.0f} leads/s",
            "ratio": f"{ratios['drf_usual']} × usual "
            f"(per CPU-second: {ratios_per_cpu['drf_usual']} ×)",
        },
        "references": {
            k: {"title": REFERENCE_TITLES[k], "figures": runs[k]["figures"]} for k in REFERENCES
        },
        "ratios": ratios,
        "ratios_per_cpu": ratios_per_cpu,
        "targets": [target("leads/s", "≥ 50,000 leads/s", value, value >= 50_000)],
        "series": {k: {c: r["series"]} for k, r in runs.items()},
        "notes": [
            "The three APIs run at once and their wrk slices take turns (as in intake); "
            "LeadFlow runs with its backpressure bounds raised."
        ],
    }
