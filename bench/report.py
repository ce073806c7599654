"""report.json, report.md and the PNG plots of a run."""

import json
import os
import platform
import subprocess
from pathlib import Path

from bench import capacity
from bench.stack import ROOT


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_facts() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except OSError:
        mem_kb = 0
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_start": load_average(),
        "load_generator": "wrk (same machine), new TCP connection per request (gunicorn sync)",
    }


def git_facts() -> dict:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain")),
    }


# ---------------------------------------------------------------------------------------------
# Plots.
# ---------------------------------------------------------------------------------------------
def _plot(path: Path, title: str, panels: list[dict]) -> Path | None:
    """panels: [{"ylabel", "lines": {label: [(x, y)]}, "hlines": {label: y}, "xlabel",
    "vlines": [(x, label)], "span": (x0, x1) shaded}]"""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.2 * len(panels)), squeeze=False)
    for ax, panel in zip(axes[:, 0], panels, strict=True):
        for label, points in panel["lines"].items():
            points = [(x, y) for x, y in points if y is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o" if len(points) < 40 else None, markersize=3, label=label)
        for label, y in (panel.get("hlines") or {}).items():
            if y:
                ax.axhline(y, linestyle="--", linewidth=1, color="grey")
                ax.annotate(label, (0, y), fontsize=8, color="grey", va="bottom")
        for x, label in panel.get("vlines") or []:
            ax.axvline(x, linestyle=":", linewidth=1, color="purple")
            ax.annotate(
                label,
                (x, 1),
                xycoords=("data", "axes fraction"),
                fontsize=7,
                color="purple",
                rotation=90,
                va="top",
                ha="right",
            )
        if panel.get("span"):
            ax.axvspan(*panel["span"], color="orange", alpha=0.15)
        ax.set_ylabel(panel["ylabel"])
        ax.set_xlabel(panel.get("xlabel", "seconds since the run started"))
        if panel.get("log"):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _xy(series: list[dict], key: str, x: str = "t") -> list[tuple]:
    return [(p[x], p.get(key)) for p in series]


def plots(run_dir: Path, name: str, result: dict) -> list[str]:
    series = result.get("series") or {}
    made: list[Path | None] = []
    if name in ("intake", "batch", "durability"):
        key = "accepted_leads_per_s" if name == "batch" else "ok_per_s"
        unit = "leads accepted/s" if name == "batch" else "2xx answers/s"
        for connections in sorted({c for per in series.values() for c in per}, key=int):
            lines_rate = {
                k: _xy(per[connections], key) for k, per in series.items() if connections in per
            }
            lines_p99 = {
                k: _xy(per[connections], "p99_ms")
                for k, per in series.items()
                if connections in per
            }
            made.append(
                _plot(
                    run_dir / f"{name}-c{connections}.png",
                    f"{name}: {connections} connections",
                    [
                        {"ylabel": unit, "lines": lines_rate},
                        {"ylabel": "p99 latency (ms)", "lines": lines_p99, "log": True},
                    ],
                )
            )
    elif name == "pipeline":
        made.append(
            _plot(
                run_dir / "pipeline.png",
                "pipeline: leads synced (and qualified) in PostgreSQL",
                [
                    {
                        "ylabel": "leads",
                        "lines": {k: _xy(v, "count") for k, v in series.items()},
                    },
                    {"ylabel": "leads/s", "lines": {k: _xy(v, "rate") for k, v in series.items()}},
                ],
            )
        )
    elif name == "writes":
        made.append(
            _plot(
                run_dir / "writes.png",
                "writes: rows/s per batch of 500",
                [
                    {
                        "ylabel": "rows/s",
                        "lines": {k: _xy(v, "rows_per_s") for k, v in series.items()},
                        "log": True,
                    }
                ],
            )
        )
    elif name == "forecast":
        made.append(
            _plot(
                run_dir / "forecast.png",
                "forecast: arrivals and the forecast made 5 minutes before each moment",
                [
                    {
                        "ylabel": "leads/s",
                        "lines": {
                            "offered": _xy(series.get("offered", []), "rate"),
                            "arrived (controller)": _xy(series.get("arrivals", []), "rate"),
                            "forecast for then": _xy(series.get("forecast", []), "rate"),
                        },
                    }
                ],
            )
        )
    elif name in ("overload", "soak"):
        capacity = (result.get("reference") or {}).get("figures", {}).get("capacity_leads_per_s")
        for phase, data in series.items():
            load = data.get("load") or []
            rows = data.get("rows") or []
            panels = [
                {
                    "ylabel": "requests/s",
                    "lines": {
                        "answered": _xy(load, "answered_per_s"),
                        "202 accepted": _xy(load, "ok_per_s"),
                        "429": _xy(load, "r429_per_s"),
                    },
                    "hlines": {
                        "offered": data.get("offered_per_s"),
                        "capacity": data.get("capacity", capacity),
                    },
                },
                {
                    "ylabel": "ACK latency (ms)",
                    "lines": {"p50": _xy(load, "p50_ms"), "p99": _xy(load, "p99_ms")},
                    "log": True,
                },
                {
                    "ylabel": "leads qualified/s",
                    "lines": {"goodput": _xy(rows, "rate")},
                    "hlines": {"capacity": data.get("capacity", capacity)},
                },
            ]
            if data.get("lag"):
                panels.append(
                    {
                        "ylabel": "lag (s)",
                        "lines": {
                            tier: _xy(data["lag"], tier) for tier in ("critical", "normal", "low")
                        },
                    }
                )
            if data.get("rss"):
                panels.append(
                    {"ylabel": "RSS (MB)", "lines": {k: v for k, v in data["rss"].items()}}
                )
            # Mode transitions on every panel, the spike shaded.
            marks = [(t["t"], f"→ {t['to']}") for t in data.get("transitions") or []]
            for panel in panels:
                panel["vlines"] = marks
                panel["span"] = data.get("spike")
            made.append(_plot(run_dir / f"{name}-{phase}.png", f"{name}: {phase}", panels))
    return [p.name for p in made if p]


# ---------------------------------------------------------------------------------------------
# report.md
# ---------------------------------------------------------------------------------------------
def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 10 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    return str(value)


_SHOWN = (
    "ok_per_s",
    "ok_per_cpu_s",
    "accepted_leads_per_s",
    "accepted_leads_per_cpu_s",
    "leads_per_s",
    "steady_leads_per_s",
    "rows_per_s",
    "p50_ms",
    "p99_ms",
    "p999_ms",
    "non_2xx",
    "unanswered",
    "dropped_at_slice_end",
    "seconds",
    "leads",
    "rows",
    "batch_p50_ms",
    "capacity_leads_per_s",
    "limited_by",
    "pipeline_leads_per_s",
    "backlog_at_start",
    "backlog_at_end",
    "backlog_lasted_s",
    "offered_per_s",
    "sent_per_s",
    "missed",
    "share_429",
    "share_429_with_retry_after",
    "ack_p50_ms",
    "ack_p99_ms",
    "ack_p99_with_unanswered_ms",
    "critical_p50_s",
    "critical_p99_s",
    "critical_sent",
    "critical_stored_critical",
    "goodput_leads_per_s",
    "goodput_vs_capacity",
    "spike_seconds",
    "thin_activation_s",
    "recovery_s",
    "modes",
    "max_rss_growth",
    "api_worker_rss_max_mb",
    "statuses",
    "cpu_cores",
)


def _figure_rows(figures: dict) -> list[str]:
    flat = {}
    for key, value in figures.items():
        if isinstance(value, dict) and key not in ("statuses", "errors", "cpu_cores"):
            for sub, v in value.items():
                if sub in _SHOWN:
                    flat.setdefault(sub, {})[key] = v
        elif key in _SHOWN:
            flat.setdefault(key, {})[""] = value
    lines = []
    for key in _SHOWN:
        if key in flat:
            values = flat[key]
            shown = (
                _fmt(values[""])
                if list(values) == [""]
                else ", ".join(f"{k}: {_fmt(v)}" for k, v in values.items())
            )
            lines.append(f"| {key} | {shown} |")
    return lines


_RECEIPT_HEADS = {
    "accepted": "accepted",
    "demoted": "demoted",
    "duplicates": "dup",
    "refused_ip_rate": "429 ip",
    "refused_tenant_rate": "429 rate",
    "refused_hourly_budget": "429 budget",
    "refused_backpressure": "429 backpressure",
    "sampled": "sampled",
    "deferred": "deferred",
    "backfilled": "backfilled",
    "quarantined": "quarantined",
    "dead_lettered": "dead letters",
    "synced": "synced",
    "synced_p50_s": "synced p50 s",
    "synced_p99_s": "synced p99 s",
}


def _receipt_rows(receipts: dict[str, dict]) -> list[str]:
    """Each phase's receipt per tenant, as GET /api/v1/usage gives it (README "Receipt")."""
    if not receipts:
        return []
    out = [
        "Receipts (per tenant, as its `GET /api/v1/usage` says of the phase):",
        "",
        "| phase | tenant | " + " | ".join(_RECEIPT_HEADS.values()) + " |",
        "|---|---|" + "---|" * len(_RECEIPT_HEADS),
    ]
    for phase, tenants in receipts.items():
        for tenant, row in tenants.items():
            cells = " | ".join(_fmt(row.get(name)) for name in _RECEIPT_HEADS)
            out.append(f"| {phase} | {tenant} | {cells} |")
    return [*out, ""]


def markdown(meta: dict, results: dict) -> str:
    m = meta["machine"]
    out = [
        "# LeadFlow benchmark report",
        "",
        f"- command: `{meta['command']}`",
        f"- started {meta['started_at']}, finished {meta['finished_at']}",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}; load average at start {m['load_average_start']}, at end "
        f"{meta['load_average_end']} (a shared machine: absolute figures drift, ratios hold "
        "better)",
        f"- load generator: {m['load_generator']}",
        f"- code: {meta['git']['commit']}"
        f"{' + uncommitted changes' if meta['git']['dirty'] else ''}",
        "",
        "## Summary",
        "",
        "| scenario | LeadFlow | reference (same run) | ratio |",
        "|---|---|---|---|",
        *[
            f"| {name} | {r['headline']['leadflow']} | {r['headline']['reference']} "
            f"| {r['headline']['ratio']} |"
            for name, r in results.items()
            if r.get("headline")
        ],
        "",
        "## Targets",
        "",
        "| scenario | target | wanted | measured | met |",
        "|---|---|---|---|---|",
    ]
    for name, result in results.items():
        if "error" in result:
            out.append(f"| {name} | (failed) | | {result['error'][:120]} | no |")
            continue
        for t in result.get("targets", []):
            out.append(
                f"| {name} | {t['name']} | {t['target']} | {_fmt(t['value'])} "
                f"| {'**yes**' if t['met'] else 'no'} |"
            )
    for name, result in results.items():
        out += ["", f"## {result.get('title', name)}", ""]
        if "error" in result:
            out += ["Failed:", "", "```", result.get("trace", result["error"])[-3000:], "```"]
            continue
        out += [f"Unit: {result.get('unit', '')}; ran {result.get('wall_seconds')} s.", ""]
        out += ["| LeadFlow | |", "|---|---|", *_figure_rows(result["figures"]), ""]
        references = result.get("references") or (
            {result["reference"]["name"]: result["reference"]} if result.get("reference") else {}
        )
        for ref_name, ref in references.items():
            ratio = (result.get("ratios") or {}).get(ref_name, result.get("ratio"))
            per_cpu = (result.get("ratios_per_cpu") or {}).get(ref_name)
            out += [
                f"| {ref_name}: {ref.get('title', '')} | |",
                "|---|---|",
                *_figure_rows(ref["figures"]),
                f"| **LeadFlow ÷ this** | {_fmt(ratio)} |",
                *([f"| LeadFlow ÷ this, per CPU-second | {_fmt(per_cpu)} |"] if per_cpu else []),
                "",
            ]
        out += _receipt_rows(result.get("receipts") or {})
        for plot in result.get("plots", []):
            out += [f"![{plot}]({plot})", ""]
        for note in result.get("notes", []):
            out.append(f"- {note}")
    out += ["", *capacity.markdown(meta.get("capacity_model") or {})]
    if meta.get("profiles"):
        out += ["", "## Profiles (BENCH_PROFILE=1)", ""]
        for name, prof in meta["profiles"].items():
            out += [
                f"### {name}",
                "",
                f"samples/seconds: {prof.get('samples', prof.get('seconds'))}",
                "",
            ]
            for kind in ("self_by_package", "self_by_function", "inclusive_by_app_function"):
                if prof.get(kind):
                    out += [f"{kind.replace('_', ' ')}:", ""]
                    out += [f"- {share * 100:.1f} % {label}" for label, share in prof[kind][:12]]
                    out.append("")
    out += ["", "Configuration: `" + json.dumps(meta["config"]) + "`", ""]
    return "\n".join(out)


def write(run_dir: Path, meta: dict, results: dict) -> list[Path]:
    for name, result in results.items():
        if "error" not in result:
            try:
                result["plots"] = plots(run_dir, name, result)
            except Exception as exc:  # noqa: BLE001 - a plot must not lose the figures
                result.setdefault("notes", []).append(f"plotting failed: {exc}")
    report_json = run_dir / "report.json"
    targets = [
        {"scenario": name, **t}
        for name, result in results.items()
        for t in result.get("targets", [])
    ]
    targets += [
        {"scenario": name, "name": "(the scenario failed)", "value": result["error"], "met": False}
        for name, result in results.items()
        if "error" in result
    ]
    data = {**meta, "targets": targets, "results": results}
    report_json.write_text(json.dumps(data, indent=2, default=str))
    report_md = run_dir / "report.md"
    report_md.write_text(markdown(meta, results))
    return [report_json, report_md]


def readme_table(data: dict) -> str:
    """The README's Performance table from a report.json: `python -m bench.report PATH`."""
    rows = [
        "| scenario | LeadFlow | reference, same run | ratio | targets met |",
        "|---|---|---|---|---|",
    ]
    for name, result in data["results"].items():
        if "error" in result:
            rows.append(f"| {name} | failed: {result['error'][:80]} | | | |")
            continue
        head = result.get("headline") or {}
        met = [t for t in result.get("targets", []) if t["met"]]
        rows.append(
            f"| {name} | {head.get('leadflow', '')} | {head.get('reference', '')} "
            f"| {head.get('ratio', '')} | {len(met)} of {len(result.get('targets', []))} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    import sys

    print(readme_table(json.loads(Path(sys.argv[1]).read_text())))
