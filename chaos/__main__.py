"""`python -m chaos [--short] [--only NAME,...]`, run by `make chaos` (and, short, by the tests).

Starts PostgreSQL and Redis (private, or the given ones behind a proxy: chaos/services.py),
the HTTP doubles of the AI provider and the CRM, the platform's processes under a supervisor,
and steady load from three tenants; runs the experiments one after another; writes
chaos/results/<timestamp>/ (report.json, report.md, a plot per experiment, every log). Exits 1
when an experiment misses a target, 2 when the harness itself failed.
"""

import argparse
import logging
import os
import secrets
import shlex
import shutil
import sys
import threading
import time
import traceback
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import redis

from chaos import report, seams
from chaos.config import config_for, proxy_database_name, proxy_redis_db
from chaos.experiments import Context
from chaos.load import Load
from chaos.platform import HttpDouble, Platform
from chaos.runner import Deliveries, PlatformBroken, health_check, run_experiment, verdict
from chaos.services import DATABASE_NAME, database_create, services_for
from chaos.tracking import Tracker

RESULTS_DIR = Path(__file__).resolve().parent / "results"
log = logging.getLogger("chaos")


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m chaos")
    parser.add_argument("--short", action="store_true", help="the short form (make test)")
    parser.add_argument("--only", default="", help="comma-separated experiment names")
    parser.add_argument("--out", type=Path, help="results directory")
    parser.add_argument(
        "--services",
        choices=("auto", "private", "proxied"),
        default="auto",
        help="private servers, or DATABASE_URL / REDIS_URL's behind a proxy (auto: proxied "
        "when both are set)",
    )
    parser.add_argument("--keep-data", action="store_true", help="keep the servers' data dirs")
    return parser.parse_args(argv)


def _watchdog(seconds: float) -> None:
    """If the harness hangs, end it: PR_SET_PDEATHSIG then stops everything it started."""

    def expire() -> None:
        log.error("the harness ran past %.0f s: giving up", seconds)
        os._exit(2)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


def _logging(run_dir: Path) -> None:
    formatter = logging.Formatter("chaos %(asctime)s %(message)s", "%H:%M:%S")
    for handler in (logging.StreamHandler(sys.stdout), logging.FileHandler(run_dir / "chaos.log")):
        handler.setFormatter(formatter)
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    # Django's logging set-up (tenants are created through it) sends the root logger's records
    # out as JSON: the harness's lines stay its own, and httpx's one line per request stays out.
    log.propagate = False
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str]) -> int:
    args = _arguments(argv)
    config = config_for(args.short)
    faults = config.faults
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = set(names) - {f.name for f in faults}
        if unknown:
            print(
                f"unknown experiments {sorted(unknown)}; choose from "
                f"{', '.join(f.name for f in faults)}",
                file=sys.stderr,
            )
            return 2
        faults = tuple(f for f in faults if f.name in names)
    mode = args.services
    if mode == "auto":
        both = os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")
        mode = "proxied" if both else "private"

    started_at = datetime.now(UTC)
    run_dir = (args.out or RESULTS_DIR / started_at.strftime("%Y%m%d-%H%M%S")).resolve()
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    _logging(run_dir)
    per_experiment = config.baseline_seconds + config.tail_seconds + config.settle_seconds + 90
    budget = 900 + config.final_settle_seconds + sum(f.seconds + per_experiment for f in faults)
    _watchdog(budget)
    header = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "command": os.environ.get("CHAOS_COMMAND") or shlex.join(["python", "-m", "chaos", *argv]),
        "commit": report.commit(),
        "machine": report.machine(),
        "services": mode,
        "config": {k: v for k, v in vars(config).items() if k != "faults"},
    }
    log.info("results in %s (services: %s)", run_dir, mode)
    harness = Harness(config, mode, run_dir, budget)
    try:
        results = harness.run(faults, header)
    except Exception:  # noqa: BLE001 - the harness failed; say where, then clean up
        log.error("the harness failed:\n%s", traceback.format_exc())
        return 2
    finally:
        harness.close(keep_data=args.keep_data)
    failed = [r["name"] for r in results if r.get("error") or r.get("pass") is False]
    log.info("report: %s", run_dir / "report.md")
    if failed:
        log.info("targets missed in: %s", ", ".join(failed))
        return 1
    log.info("every experiment met its targets")
    return 0


class Harness:
    def __init__(self, config, mode: str, run_dir: Path, budget: float) -> None:
        self.config, self.mode, self.run_dir, self.budget = config, mode, run_dir, budget
        self.postgres, self.redis = services_for(mode, run_dir, os.environ)
        self.ai = HttpDouble("ai-double", run_dir, budget)
        self.crm = HttpDouble("crm-double", run_dir, budget)
        self.platform = self.load = self.tracker = None
        self.started = time.time()  # wall clock: the CRM double stamps calls with time.time()

    def _environments(self) -> tuple[dict, dict]:
        """(the platform's environment, the harness's own: straight to the servers)."""
        database = DATABASE_NAME if self.mode == "private" else proxy_database_name()
        redis_db = 0 if self.mode == "private" else proxy_redis_db()
        base = {k: v for k, v in os.environ.items() if k != "CELERY_BROKER_URL"}
        # Production settings (not LEADFLOW_DEV) need a secret key: one for the run.
        base.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
        base.update(
            PYTHONUNBUFFERED="1",
            LEADFLOW_AI_URL=self.ai.url,
            # The doubles are plain HTTP on 127.0.0.1, which the SSRF guard refuses unless told.
            LEADFLOW_OUTBOUND_ALLOW_HTTP="true",
            LEADFLOW_OUTBOUND_ALLOWED_HOSTS="127.0.0.1",
            # Metrics servers off: their fixed ports would collide with `make run`'s.
            LEADFLOW_CONTROL_METRICS_PORT="0",
            LEADFLOW_POOL_A_METRICS_PORT="0",
            LEADFLOW_POOL_B_METRICS_PORT="0",
            LEADFLOW_POOL_C_METRICS_PORT="0",
        )
        if self.mode == "proxied" and not os.environ.get("LEADFLOW_REDIS_CHECKS"):
            # A shared server's durability settings are not the harness's to choose (CI's Redis
            # runs without AOF): the processes warn instead of refusing to start.
            base["LEADFLOW_REDIS_CHECKS"] = "warn"
        platform_env = {
            **base,
            "DATABASE_URL": self.postgres.platform_url(database),
            "REDIS_URL": self.redis.platform_url(redis_db),
        }
        direct_env = {
            **base,
            "DATABASE_URL": self.postgres.database_url(database),
            "REDIS_URL": self.redis.url(redis_db),
        }
        return platform_env, direct_env

    def run(self, faults, header: dict) -> list[dict]:
        config = self.config
        log.info("starting PostgreSQL and Redis (%s)", self.mode)
        self.postgres.start()
        self.redis.start()
        platform_env, direct_env = self._environments()
        database = direct_env["DATABASE_URL"].rsplit("/", 1)[1]
        database_create(self.postgres.admin_conninfo, database, fresh=self.mode == "proxied")
        redis.Redis.from_url(direct_env["REDIS_URL"]).flushdb()
        self.ai.start()
        self.crm.start()
        log.info("migrating %s", database)
        seams.migrate(direct_env)
        tenants = seams.tenants_create(direct_env, self.crm.url)
        self.tracker = Tracker(self.postgres.admin_conninfo, database, direct_env["REDIS_URL"])
        self.redis_client = redis.Redis.from_url(direct_env["REDIS_URL"], socket_timeout=10)
        self.platform = Platform(platform_env, self.run_dir, self.budget)
        log.info("starting the platform")
        self.platform.start()
        self.load = Load(self.platform.api_url, tenants, config, self.tracker.accepted)
        context = Context(self.platform, self.postgres, self.redis, self.ai, self.crm, config)
        deliveries = Deliveries()
        results: list[dict] = []
        problem = health_check(context, tenants, self.tracker)
        if problem:
            raise PlatformBroken(f"the platform did not serve after starting: {problem}")
        broken = None
        for fault in faults:
            log.info("experiment %s (%.0f s)", fault.name, fault.seconds)
            if broken:
                result = {"name": fault.name, "kind": fault.kind, "error": broken}
            else:
                try:
                    result = run_experiment(
                        context, fault, self.load, self.tracker, tenants, deliveries
                    )
                except RuntimeError as exc:
                    log.error("experiment %s: %s", fault.name, exc)
                    result = {"name": fault.name, "kind": fault.kind, "error": str(exc)}
                if result.get("platform_broken"):
                    broken = f"not run: the platform no longer served ({result['unhealthy_after']})"
            if not (result.get("error") or result.get("skipped")):
                result["targets"] = verdict(result)
                missed = not all(check["pass"] for check in result["targets"].values())
                result["pass"] = False if missed else None  # None: lost leads still to count
            results.append(result)
            self._summarise(result)
            report.write(self.run_dir, header, results)
        self._finish(results, header, tenants, deliveries)
        return results

    def _summarise(self, result: dict) -> None:
        if result.get("error") or result.get("skipped"):
            log.info("  %s: %s", result["name"], result.get("error") or result.get("skipped"))
            return
        log.info(
            "  %s: accepted %d, stuck %d, 5xx %d, 503 %d, no answer %d, recovery %s s, exits %s%s",
            result["name"],
            result["accepted"],
            result["stuck"],
            result["http_5xx"],
            result["answers"].get("503", 0),
            result["no_answer"],
            result["recovery_seconds"],
            result["process_exits"],
            f"; unhealthy after: {result['unhealthy_after']}" if result["unhealthy_after"] else "",
        )

    def _finish(self, results, header, tenants, deliveries) -> None:
        """Wait a last while for stragglers, then count lost leads and duplicates; write."""
        deadline = time.monotonic() + self.config.final_settle_seconds
        while time.monotonic() < deadline and self.tracker.pending_total():
            time.sleep(1)
        deliveries.collect(self.crm, tenants[0].crm_path)
        for result in results:
            if result.get("error") or result.get("skipped"):
                result["pass"] = None if result.get("skipped") else False
                continue
            trace_ids = self.tracker.trace_ids(result["name"])
            stored = self.tracker.statuses(trace_ids)
            unstored = [t for t in trace_ids if t not in stored]
            in_redis = seams.trace_ids_in_redis(self.redis_client, unstored) if unstored else {}
            result["stored"] = len(stored)
            # Accepted, not stored, and nowhere in Redis either: gone. The others still wait.
            result["lost"] = len(unstored) - len(in_redis)
            result["unstored_in_redis"] = dict(Counter(in_redis.values()).most_common())
            later = [
                self.tracker.terminal[t][1]
                for t in trace_ids
                if t in self.tracker.terminal and self.tracker.terminal[t][1] > result["ended"]
            ]
            result["finished_after_experiment"] = len(later)
            if later:
                seconds = max(later) - result["fault_end"]
                result["last_finished_seconds_after_fault"] = round(seconds, 1)
            result.update(deliveries.counts(trace_ids))
            if result["duplicate_deliveries"]:
                result["duplicate_sample"] = deliveries.duplicate_sample(trace_ids, self.started)
            result["targets"] = verdict(result)
            result["pass"] = all(check["pass"] for check in result["targets"].values())
            answers = [a for a in self.load.answers if a.experiment == result["name"]]
            result["plot"] = report.plot(self.run_dir, result, answers, self.tracker.samples)
        missed = [r["name"] for r in results if r.get("pass") is False]
        header["verdict"] = f"targets missed in {', '.join(missed)}" if missed else "all met"
        header["machine"]["load_average_at_end"] = report.machine()["load_average"]
        report.write(self.run_dir, header, results)
        report.samples_write(self.run_dir, self.tracker.samples, results)

    def close(self, keep_data: bool) -> None:
        for part in (self.load, self.platform, self.tracker, self.ai, self.crm):
            if part is not None:
                try:
                    part.close()
                except Exception:  # noqa: BLE001 - stop the rest all the same
                    log.exception("stopping %s", type(part).__name__)
        for service in (self.redis, self.postgres):
            try:
                service.close()
            except Exception:  # noqa: BLE001
                log.exception("stopping %s", service.name)
        if not keep_data:
            for name in ("pg", "redis"):
                shutil.rmtree(self.run_dir / name, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
