"""writes: rows/s of pool A's bulk write path (the qualification service on prepared entries,
batches of DISPATCH_BATCH_MAX, one transaction each); references: psycopg COPY of the same
rows into the same table in the same batches, and Django's bulk_create of them."""

import cProfile
import pstats
import statistics

import psycopg

from bench import profile, seams
from bench.refs.copy_rows import CopyReference
from bench.refs.copy_rows import batches_timed as _timed
from bench.refs.copy_rows import table_truncate as _truncate
from bench.scenarios import Context, api_url, app_api, inboxes_fill, ratio, target


def _figures(batch_seconds: list[float], sizes: list[int]) -> dict:
    total = sum(batch_seconds)
    ms = sorted(s * 1000 for s in batch_seconds)
    return {
        "rows": sum(sizes),
        "batches": len(sizes),
        "seconds": round(total, 3),
        "rows_per_s": round(sum(sizes) / total, 1),
        "batch_p50_ms": round(statistics.median(ms), 2),
        "batch_max_ms": round(ms[-1], 2),
    }


def _series(batch_seconds: list[float], sizes: list[int]) -> list[dict]:
    points, at = [], 0.0
    for seconds, size in zip(batch_seconds, sizes, strict=True):
        at += seconds
        points.append({"t": round(at, 3), "rows_per_s": round(size / seconds, 1)})
    return points


def run(ctx: Context) -> dict:
    count = ctx.config.writes_leads
    seams.state_reset()
    with ctx.stack("writes", max_seconds=600) as stack:
        api = app_api()
        stack.start(api)
        inboxes_fill(ctx, api_url(api), count)
    batches = [seams.entries_decode(raw) for raw in seams.inbox_take(count)]
    sizes = [len(b) for b in batches]
    table, columns = seams.lead_table()
    conn = psycopg.connect(ctx.env["DATABASE_URL"])
    try:
        # Warm-up (connections, caches, the scoring rules), then the measured pass on an empty
        # table.
        seams.leads_qualify(batches[0])
        _truncate(conn, table)
        ctx.log(f"writes: the qualification service on {count} leads")
        service = _timed(batches, seams.leads_qualify)

        reference = CopyReference(conn, table, columns)
        row_batches = reference.batches(sizes)
        _truncate(conn, table)
        ctx.log(f"writes: COPY of the same {len(reference.rows)} rows")
        copied = _timed(row_batches, reference.copy)

        model = seams.lead_model()
        fields = [f.attname for f in model._meta.concrete_fields]

        def bulk_create(batch) -> None:
            from django.db import transaction

            with transaction.atomic():
                model.objects.bulk_create(
                    [model(**dict(zip(fields, row, strict=True))) for row in batch], batch_size=500
                )

        _truncate(conn, table)
        ctx.log("writes: bulk_create of the same rows")
        created = _timed(row_batches, bulk_create)

        if ctx.config.profile:
            _truncate(conn, table)
            profiler = cProfile.Profile()
            profiler.enable()
            for batch in batches[: max(1, len(batches) // 5)]:
                seams.leads_qualify(batch)
            profiler.disable()
            ctx.profiles["writes/qualification service"] = profile.cprofile_summary(
                pstats.Stats(profiler)
            )
        _truncate(conn, table)
    finally:
        conn.close()

    figures = _figures(service, sizes)
    copy_figures = _figures(copied, sizes)
    bulk_figures = _figures(created, sizes)
    value = figures["rows_per_s"]
    r = ratio(value, copy_figures["rows_per_s"])
    return {
        "title": "writes: pool A's bulk write path (apps.leads.services.leads_qualify), "
        "batches of 500",
        "unit": "rows/s",
        "figures": figures,
        "reference": {
            "name": "psycopg_copy",
            "title": "psycopg 3 COPY of the same rows, same batches, one transaction each",
            "figures": copy_figures,
        },
        "ratio": r,
        "headline": {
            "leadflow": f"{value:,.0f} rows/s",
            "reference": f"COPY {copy_figures['rows_per_s']:,.0f} rows/s; "
            f"bulk_create {bulk_figures['rows_per_s']:,.0f}",
            "ratio": f"{r} × COPY",
        },
        "references": {
            "psycopg_copy": {"title": "psycopg 3 COPY", "figures": copy_figures},
            "django_bulk_create": {
                "title": "Django bulk_create(batch_size=500) of the same rows",
                "figures": bulk_figures,
            },
        },
        "ratios": {
            "psycopg_copy": r,
            "django_bulk_create": ratio(value, bulk_figures["rows_per_s"]),
        },
        "targets": [
            target("vs COPY", "≥ 0.5 ×", r, r is not None and r >= 0.5),
        ],
        "series": {
            "leadflow": _series(service, sizes),
            "psycopg_copy": _series(copied, sizes),
            "django_bulk_create": _series(created, sizes),
        },
        "notes": [
            "The write path includes what pool A does to every lead before it writes: "
            "normalization (phone parsing), semantic dedup (an advisory lock and a SELECT per "
            "tenant and batch), scoring; COPY and bulk_create write the finished rows.",
        ],
    }
