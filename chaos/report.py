"""report.json, report.md and a plot per experiment, in the run's directory."""

import contextlib
import csv
import json
import math
import os
import platform
import subprocess
from pathlib import Path

from chaos.proc import ROOT

TABLE_COLUMNS = (
    ("accepted", "accepted"),
    ("stored", "stored"),
    ("lost", "lost"),
    ("stuck", "stuck"),
    ("http_5xx", "5xx (not 503)"),
    ("http_503", "503"),
    ("no_answer", "no answer"),
    ("duplicate_deliveries", "duplicate deliveries"),
    ("recovery_seconds", "recovery s"),
)


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(memory_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"{head}{' (with uncommitted changes)' if dirty else ''}"


def write(run_dir: Path, header: dict, results: list[dict], plots: bool = True) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    document = {**header, "experiments": {r["name"]: _public(r) for r in results}}
    (run_dir / "report.json").write_text(json.dumps(document, indent=2, default=str) + "\n")
    (run_dir / "report.md").write_text(markdown(header, results))


def _public(result: dict) -> dict:
    return {key: value for key, value in result.items() if not key.startswith("_")}


def _cell(result: dict, key: str) -> str:
    if key == "http_503":
        return str(result.get("answers", {}).get("503", 0))
    value = result.get(key)
    if value is None:
        return "never" if key == "recovery_seconds" else "–"
    failed = result.get("targets", {}).get(key, {}).get("pass") is False
    return f"**{value}**" if failed else str(value)


def markdown(header: dict, results: list[dict]) -> str:
    lines = [
        f"# make chaos — {header['started_at']}",
        "",
        f"- command: `{header['command']}`",
        f"- commit: {header['commit']}",
        f"- machine: {header['machine']['cpu']}, {header['machine']['cores']} cores, "
        f"{header['machine']['memory_gb']} GB; load average at the start "
        f"{header['machine']['load_average']}",
        f"- services: {header['services']}",
        f"- load: {header['config']['rate']:.0f} leads/s offered from 3 tenants, "
        f"{header['config']['single_share']:.0%} as single posts, the rest in batches of "
        f"{header['config']['batch_size']}; {header['config']['baseline_seconds']:.0f} s before "
        f"the fault, {header['config']['tail_seconds']:.0f} s after it",
        f"- targets: 0 lost, 0 stuck, 0 × 5xx other than 503, 0 requests unanswered, every 503 "
        f"with Retry-After, 0 duplicate CRM deliveries, every lead terminal within 60 s of the "
        f"fault's end (stuck: not terminal {header['config']['settle_seconds']:.0f} s after it)",
        f"- verdict: **{header.get('verdict', 'incomplete')}**",
        "",
        "| experiment | " + " | ".join(title for _, title in TABLE_COLUMNS) + " | result |",
        "|---" * (len(TABLE_COLUMNS) + 2) + "|",
    ]
    for result in results:
        cells = [_cell(result, key) for key, _ in TABLE_COLUMNS]
        lines.append(f"| {result['name']} | " + " | ".join(cells) + f" | {_outcome(result)} |")
    lines.append("")
    for result in results:
        lines += _details(result)
    return "\n".join(lines) + "\n"


def _outcome(result: dict) -> str:
    if result.get("error"):
        return "error"
    if result.get("skipped"):
        return "skipped"
    if result.get("pass") is None:
        return "pending"  # lost leads and duplicates are counted when the run is over
    return "pass" if result["pass"] else "**FAIL**"


def _details(result: dict) -> list[str]:
    lines = [f"## {result['name']}", ""]
    if result.get("error"):
        return [*lines, f"Not measured: {result['error']}", ""]
    if result.get("skipped"):
        return [*lines, f"Skipped: {result['skipped']}", ""]
    if result.get("unhealthy_after"):
        lines.append(
            "After it the platform did not serve and was restarted (as an operator would): "
            f"{result['unhealthy_after']}."
        )
    lines += [f"- {action}" for action in result.get("actions", [])]
    lines += [
        f"- answers during the fault: {result['answers_during_fault']} "
        f"(p99 {result['answer_seconds_p99_during_fault']} s); over the experiment: "
        f"{result['answers']}",
        f"- leads by tenant and outcome: {result['outcomes']}",
        f"- process exits (restarted by the supervisor): {result['process_exits'] or 'none'}",
    ]
    if result.get("stuck_where"):
        lines.append(f"- stuck, by the status/tier last seen: {result['stuck_where']}")
        sample = dict(list(result["stuck_sample"].items())[:5])
        lines.append(f"- some stuck trace ids (for the logs; more in report.json): {sample}")
    if result.get("unstored_in_redis"):
        lines.append(
            f"- accepted, not stored at the end of the run, still in Redis: "
            f"{result['unstored_in_redis']}"
        )
    if result.get("errors_5xx"):
        lines.append(f"- 5xx bodies: {result['errors_5xx']}")
    if result.get("no_answer_errors"):
        lines.append(f"- unanswered requests: {result['no_answer_errors']}")
    if result.get("finished_after_experiment"):
        lines.append(
            f"- stuck leads terminal later: {result['finished_after_experiment']} "
            f"(the last {result['last_finished_seconds_after_fault']} s after the fault's end)"
        )
    if result.get("duplicate_sample"):
        lines.append(
            "- some trace ids delivered twice (each call: seconds since the run began, delivery "
            f"id, leads in the call): {result['duplicate_sample']}"
        )
    if result.get("updated_deliveries"):
        lines.append(
            f"- trace ids delivered again with other content (an update, e.g. enrichment shed "
            f"under overload and backfilled): {result['updated_deliveries']}"
        )
    if result.get("repeated_deliveries"):
        lines.append(
            f"- trace ids the CRM received more than once (retries and updates included): "
            f"{result['repeated_deliveries']}"
        )
    missed = [
        f"{name} {check['value']} (target {check['target']})"
        for name, check in result.get("targets", {}).items()
        if not check["pass"]
    ]
    lines.append(f"- missed: {'; '.join(missed) if missed else 'nothing'}")
    if result.get("plot"):
        lines += ["", f"![{result['name']}]({result['plot']})"]
    return [*lines, ""]


def plot(run_dir: Path, result: dict, answers, samples) -> str | None:
    """accepted/s, 503/s and backlog over the experiment, the fault shaded; the file's name."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    began, ended = result["began"], result["ended"]
    seconds = int(ended - began) + 1
    accepted, unavailable, failed = ([0] * seconds for _ in range(3))
    for answer in answers:
        index = int(answer.sent_at + answer.seconds - began)
        if 0 <= index < seconds:
            accepted[index] += answer.accepted
            if answer.status == 503:
                unavailable[index] += 1
            elif answer.status == 0 or answer.status >= 500:
                failed[index] += 1
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    x = list(range(seconds))
    top.plot(x, accepted, label="leads accepted/s", color="tab:green")
    top.plot(x, unavailable, label="503/s", color="tab:orange")
    top.plot(x, failed, label="other 5xx or no answer /s", color="tab:red")
    top.set_ylabel("per second")
    top.legend(loc="upper right", fontsize="small")
    inside = [s for s in samples if began <= s.at <= ended]
    bottom.plot(
        [s.at - began for s in inside],
        [s.backlog for s in inside],
        color="tab:blue",
        label="accepted, not terminal",
    )
    # A gap while Redis did not answer, not a line drawn across it.
    waiting = [(s.at - began, s.gauges["inbox_leads"] if s.gauges else math.nan) for s in inside]
    bottom.plot(
        [w[0] for w in waiting],
        [w[1] for w in waiting],
        color="tab:gray",
        linestyle=":",
        label="waiting in the inboxes",
    )
    bottom.set_ylabel("backlog (leads)")
    bottom.legend(loc="upper right", fontsize="small")
    bottom.set_xlabel("seconds since the experiment began")
    for axis in (top, bottom):
        axis.axvspan(
            result["fault_start"] - began,
            max(result["fault_end"] - began, result["fault_start"] - began + 0.3),
            color="tab:red",
            alpha=0.15,
        )
        if result.get("recovery_seconds") is not None:
            axis.axvline(
                result["fault_end"] - began + result["recovery_seconds"],
                color="tab:green",
                linestyle="--",
                linewidth=1,
            )
    done = (
        "every lead terminal at the dashed line"
        if result.get("recovery_seconds") is not None
        else "not every lead terminal by the end"
    )
    top.set_title(f"{result['name']}: fault shaded, {done}")
    name = f"{result['name']}.png"
    figure.tight_layout()
    figure.savefig(run_dir / name, dpi=80)
    plt.close(figure)
    return name


def samples_write(run_dir: Path, samples, results: list[dict]) -> None:
    """samples.csv: the poller's figures every second, with the experiment they fell in."""
    spans = [(r["began"], r["ended"], r["name"]) for r in results if "began" in r]
    gauge_names = sorted({name for s in samples if s.gauges for name in s.gauges})
    start = samples[0].at if samples else 0.0
    with (run_dir / "samples.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["seconds", "experiment", "accepted", "backlog", "polled", *gauge_names])
        for sample in samples:
            name = next((n for began, ended, n in spans if began <= sample.at <= ended), "")
            gauges = [(sample.gauges or {}).get(g, "") for g in gauge_names]
            row = [round(sample.at - start, 1), name, sample.accepted, sample.backlog]
            writer.writerow([*row, int(sample.polled), *gauges])
