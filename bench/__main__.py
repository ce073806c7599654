"""`python -m bench [--scenario intake,batch,...]`, run by `make bench` inside the devstack.

Runs the scenarios on their own database (leadflow_bench) and Redis database (12) of the
servers DATABASE_URL / REDIS_URL name, then writes bench/results/<timestamp>/report.md,
report.json and the plots.
"""

import argparse
import importlib
import logging
import os
import subprocess
import sys
import threading
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench import capacity, report, stack
from bench.config import SCENARIOS_ALL, SCENARIOS_DEFAULT, TENANT_LIMITS, config_from_env

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def log(message: str) -> None:
    print(f"bench {datetime.now():%H:%M:%S} {message}", flush=True)


def _watchdog(seconds: float) -> None:
    """If the driver itself hangs, end it: PR_SET_PDEATHSIG then stops everything it started."""

    def expire() -> None:
        log(f"the bench ran past {seconds:.0f} s: giving up")
        os._exit(3)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument(
        "--scenario",
        default="",
        help=f"comma-separated, of {', '.join(SCENARIOS_ALL)} (default: all but soak)",
    )
    parser.add_argument("--out", type=Path, default=None, help="results directory")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.scenario.split(",") if n.strip()] or list(SCENARIOS_DEFAULT)
    unknown = [n for n in names if n not in SCENARIOS_ALL]
    if unknown:
        parser.error(f"unknown scenario {unknown}; choose from {', '.join(SCENARIOS_ALL)}")

    config = config_from_env()
    started_at = datetime.now(UTC)
    run_dir = args.out or RESULTS_DIR / started_at.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    _watchdog(3 * 3600 + (config.soak_seconds if "soak" in names else 0))

    database_url, redis_url = stack.bench_urls(os.environ, config.database_name, config.redis_db)
    stack.database_ensure(database_url)
    os.environ.update(
        DATABASE_URL=database_url, REDIS_URL=redis_url, DJANGO_SETTINGS_MODULE="leadflow.settings"
    )
    os.environ.pop("CELERY_BROKER_URL", None)  # the broker follows REDIS_URL: the bench's db
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    log(f"results in {run_dir}")
    log(f"database {database_url.rsplit('/', 1)[1]}, Redis db {config.redis_db}; migrating")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=stack.ROOT,
        env=env,
        check=True,
    )

    from bench import seams
    from bench.scenarios import Context

    seams.django_setup()
    # After Django configured logging: the driver's HTTP client would log every inbox fill.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    tenants = seams.tenants_prepare(config.tenants, TENANT_LIMITS)
    ctx = Context(config=config, env=env, run_dir=run_dir, tenants=tenants, log=log)
    machine = report.machine_facts()

    results: dict[str, dict] = {}
    for name in names:
        log(f"scenario {name}")
        began = time.monotonic()
        try:
            module = importlib.import_module(f"bench.scenarios.{name}")
            results[name] = module.run(ctx)
        except Exception as exc:  # noqa: BLE001 - report it and go on with the next scenario
            log(f"scenario {name} failed: {exc}")
            results[name] = {
                "error": f"{type(exc).__name__}: {exc}",
                "trace": traceback.format_exc(),
            }
        results[name]["wall_seconds"] = round(time.monotonic() - began, 1)
        seams.state_reset()
    meta = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": os.environ.get("BENCH_COMMAND") or "python -m bench " + " ".join(argv),
        "scenarios": names,
        "config": config.to_json(),
        "machine": machine,
        "load_average_end": report.load_average(),
        "git": report.git_facts(),
        "tenants": {
            "count": len(tenants),
            "limits_set": TENANT_LIMITS,
            "first_tenant": seams.tenant_fields(tenants[0].tenant_id),
        },
        "profiles": ctx.profiles,
        "capacity_model": capacity.model(results),
    }
    paths = report.write(run_dir, meta, results)
    for path in paths:
        log(f"wrote {path}")
    failed = [n for n, r in results.items() if "error" in r]
    if failed:
        log(f"failed scenarios: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
