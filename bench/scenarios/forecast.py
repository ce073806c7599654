"""forecast: load rising 10× over a few minutes on the whole platform (API, pools A, B, C,
control), and how many seconds before the arrivals the controller's 5-minute forecast crossed
each threshold (apps/control/forecast.py), and its error against the rate that came.

The schedule: a warm-up at the base rate, a linear rise to 10× in 10-second steps, then a hold
at 10× long enough to check the forecasts made during the rise against what arrived 5 minutes
later. Figures come from the controller's own history (the samples the status page draws),
so they are what the autoscalers were told, tick by tick.
"""

import bisect
import time

from bench import load, seams
from bench.scenarios import Context, api_url, target
from bench.scenarios.overload import platform

HORIZON_SECONDS = 300.0  # the forecast KEDA reads (forecast.<pool>.<tier>)
STEP_SECONDS = 10.0
THRESHOLDS = (3.0, 5.0, 8.0)  # × the base rate


def schedule(base: float, warmup: float, rise: float, hold: float) -> list[float]:
    """The offered rate of each 10-second step."""
    steps = max(1, round(rise / STEP_SECONDS))
    rising = [base * (1 + 9 * (k + 1) / steps) for k in range(steps)]
    return [base] * round(warmup / STEP_SECONDS) + rising + [10 * base] * round(hold / STEP_SECONDS)


def _total(sample: dict, field: str) -> float:
    return sum(figures.get(field, 0.0) for figures in sample["tiers"].values())


def crossing(points: list[tuple[float, float]], threshold: float) -> float | None:
    return next((at for at, value in points if value >= threshold), None)


def analyse(samples: list[dict], base: float, started: float) -> dict:
    """Seconds ahead at each threshold, and the forecasts' error 5 minutes on against the
    error of assuming the rate stays as it is (the naive forecast)."""
    samples = [s for s in samples if s["at"] >= started]
    actual = [(s["at"], _total(s, "arrivals")) for s in samples]
    made = [(s["at"], _total(s, "forecast_5m")) for s in samples]
    ahead = {}
    for multiple in THRESHOLDS:
        threshold = multiple * base
        arrived, forecast = crossing(actual, threshold), crossing(made, threshold)
        ahead[f"{multiple:g}x"] = (
            round(arrived - forecast, 1) if arrived is not None and forecast is not None else None
        )
    times = [at for at, _ in actual]
    errors, naive_errors = [], []
    for (at, forecast), (_, now_rate) in zip(made, actual, strict=True):
        index = bisect.bisect_left(times, at + HORIZON_SECONDS)
        if index >= len(times):
            break
        then = actual[index][1]
        if then > 0:
            errors.append(abs(forecast - then) / then)
            naive_errors.append(abs(now_rate - then) / then)
    mape = round(100 * sum(errors) / len(errors), 1) if errors else None
    naive = round(100 * sum(naive_errors) / len(naive_errors), 1) if naive_errors else None
    return {
        "seconds_ahead": ahead,
        "error_5m_mape_percent": mape,
        "naive_error_5m_mape_percent": naive,
        "error_vs_naive": round(mape / naive, 3) if mape is not None and naive else None,
        "forecasts_checked": len(errors),
    }


def run(ctx: Context) -> dict:
    config = ctx.config
    base = config.forecast_base_rate
    rates = schedule(
        base,
        config.forecast_warmup_seconds,
        config.forecast_rise_seconds,
        config.forecast_hold_seconds,
    )
    total_seconds = len(rates) * STEP_SECONDS
    spec = load.LoadSpec(
        url="",
        keys=ctx.keys,
        connections=int(min(config.overload_max_connections, max(64, 10 * base))),
        threads=2,
        critical_permille=config.overload_critical_permille,
        timeout_seconds=10,
    )
    ctx.log(
        f"forecast: {base:g} → {10 * base:g} leads/s over {config.forecast_rise_seconds:g} s, "
        f"{total_seconds:g} s in all"
    )
    with platform(ctx, "forecast", total_seconds + 300) as (stack, api):
        spec.url = api_url(api)
        time.sleep(2 * STEP_SECONDS)  # the controller's first steps, on no load
        started = time.time()
        offered, answered = [], []
        for rate in rates:
            spec.rate = rate
            step_started = time.time()
            result = load.run(spec, STEP_SECONDS, ctx.run_dir / "wrk", slice_seconds=STEP_SECONDS)
            offered.append({"t": round(step_started - started, 1), "rate": rate})
            answered.append(
                {"t": round(step_started - started, 1), "ok_per_s": result.figures()["ok_per_s"]}
            )
        time.sleep(STEP_SECONDS)  # the last step's arrivals reach the history
        samples = seams.control_history(started - STEP_SECONDS)
        mode = seams.platform_mode()
    figures = analyse(samples, base, started)
    figures.update(
        {
            "base_leads_per_s": base,
            "peak_leads_per_s": 10 * base,
            "rise_seconds": config.forecast_rise_seconds,
            "mode_at_end": mode,
        }
    )
    series = {
        "arrivals": [
            {"t": round(s["at"] - started, 1), "rate": _total(s, "arrivals")} for s in samples
        ],
        "forecast": [
            {"t": round(s["at"] + HORIZON_SECONDS - started, 1), "rate": _total(s, "forecast_5m")}
            for s in samples
            if s["at"] >= started
        ],
        "offered": offered,
        "accepted": answered,
    }
    ahead = figures["seconds_ahead"]
    vs_naive = figures["error_vs_naive"]
    return {
        "title": f"forecast: load rising 10× over {config.forecast_rise_seconds:g} s",
        "unit": "seconds ahead",
        "figures": figures,
        "ratio": vs_naive,
        "headline": {
            "leadflow": "forecast crossed "
            + ", ".join(f"{k} base {v} s" for k, v in ahead.items())
            + f" before the arrivals; 5-minute error {figures['error_5m_mape_percent']} %",
            "reference": f"assuming today's rate: {figures['naive_error_5m_mape_percent']} %",
            "ratio": f"error {vs_naive} × the naive forecast's",
        },
        "targets": [
            *(
                target(
                    f"forecast ahead of arrivals at {k} base",
                    "> 0 s",
                    v,
                    v is not None and v > 0,
                )
                for k, v in ahead.items()
            ),
            target(
                "5-minute forecast error vs assuming today's rate",
                "< 1 ×",
                vs_naive,
                vs_naive is not None and vs_naive < 1,
            ),
        ],
        "series": series,
        "notes": [
            "Arrivals: what the controller measured entering the inboxes, per 10-second step. "
            "Seconds ahead: when the arrivals reached a threshold, less when the 5-minute "
            "forecast first did (at most 300 s, the horizon; 0 s is no better than watching "
            "the current rate). Error: mean absolute percentage error of each forecast "
            "against the arrival rate 5 minutes after it was made, for the forecasts whose "
            "moment the run reached; the naive forecast is the rate at the time it was made.",
        ],
    }
