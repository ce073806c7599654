"""Start-up and runtime checks of the Redis servers that hold accepted leads (README "Outages").

Accepted leads live in Redis (inboxes, in-flight batches, broker messages) until they are in
PostgreSQL, so invariant 1 needs Redis to keep what it acknowledged: `appendonly yes` (the AOF
survives a restart) and `maxmemory-policy noeviction` (a full Redis refuses writes, which the
intake answers with 503, rather than dropping keys). With LEADFLOW_REDIS_APPENDFSYNC set, the
server's `appendfsync` must match it too (when the server lets CONFIG GET be read).

The API (leadflow/wsgi.py), the workers (celeryd_after_setup, below) and control (run_control) call
`redis_checks_run()` once at start. LEADFLOW_REDIS_CHECKS chooses what a finding does:
  strict (default)  the process refuses to start: a log line at CRITICAL per finding, then exit
  warn              a log line at ERROR per finding, and the process starts (the tests and CI
                    use it: CI's Redis runs with appendonly no)
  off               nothing is checked
A Redis that does not answer at start is not a reason to stop (the process reconnects by
itself): it is checked when it answers. Every process then checks again each
LEADFLOW_REDIS_CHECK_INTERVAL_SECONDS (a Redis restarted with other settings), logs a change,
and exports `leadflow_redis_durability_ok{server,setting}` (1 good, 0 not), which
deploy/prometheus/rules.yml alerts on. Also a Django system check (deploy, tag
"leadflow_redis"): `manage.py check --deploy --tag leadflow_redis` runs it by hand; migrate and
other commands never do.
"""

import logging
import threading
import time
from urllib.parse import urlsplit

import redis
from celery import signals
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from prometheus_client import Gauge

log = logging.getLogger(__name__)

TAG = "leadflow_redis"
SETTINGS = ("appendonly", "maxmemory_policy", "appendfsync")
_TIMEOUT_SECONDS = 2.0
_RETRY_SECONDS = 5.0  # while a server has not answered since the start

DURABILITY_OK = Gauge(
    "leadflow_redis_durability_ok",
    "1 when a Redis server LeadFlow keeps leads in has the setting it needs (appendonly yes, "
    "maxmemory-policy noeviction, appendfsync as LEADFLOW_REDIS_APPENDFSYNC), 0 when not; by "
    "server (redis: REDIS_URL; broker: CELERY_BROKER_URL, when another server) and setting.",
    ["server", "setting"],
    multiprocess_mode="livemin",
)


class RedisNotDurable(ImproperlyConfigured):
    """LEADFLOW_REDIS_CHECKS=strict and a Redis server would lose accepted leads."""


def servers() -> dict[str, str]:
    """name -> URL of each Redis server that holds leads: REDIS_URL, and the broker if it is
    another server (another database of the same server has the same settings)."""
    found = {"redis": settings.REDIS_URL}
    broker = settings.CELERY_BROKER_URL
    if broker.startswith(("redis://", "rediss://")) and _where(broker) != _where(found["redis"]):
        found["broker"] = broker
    return found


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"


def server_settings(url: str) -> dict[str, str]:
    """What the server runs with. INFO works where CONFIG is disabled (managed Redis);
    appendfsync is only in CONFIG, so it is '' when CONFIG GET is refused."""
    client = redis.Redis.from_url(
        url, socket_timeout=_TIMEOUT_SECONDS, socket_connect_timeout=_TIMEOUT_SECONDS
    )
    try:
        persistence = client.info("persistence")
        memory = client.info("memory")
        replication = client.info("replication")
        try:
            appendfsync = client.config_get("appendfsync").get("appendfsync", "")
        except redis.ResponseError:  # CONFIG renamed or not permitted
            appendfsync = ""
    finally:
        client.close()
    return {
        "appendonly": "yes" if int(persistence.get("aof_enabled", 0)) else "no",
        "maxmemory_policy": str(memory.get("maxmemory_policy", "")),
        "appendfsync": appendfsync.decode() if isinstance(appendfsync, bytes) else appendfsync,
        "replicas": str(replication.get("connected_slaves", 0)),
    }


def findings(server: str, url: str, found: dict[str, str]) -> dict[str, str]:
    """setting -> what is wrong with it ('' when it is right), for one server."""
    where = _where(url)
    wanted_fsync = settings.REDIS_APPENDFSYNC
    problems = {setting: "" for setting in SETTINGS}
    if found["appendonly"] != "yes":
        problems["appendonly"] = (
            f"Redis ({server}, {where}) runs with appendonly no: the leads it holds (accepted "
            "with 202, not yet in PostgreSQL) are lost when it restarts. Set appendonly yes "
            "(redis.conf, or CONFIG SET appendonly yes then CONFIG REWRITE)."
        )
    if found["maxmemory_policy"] != "noeviction":
        problems["maxmemory_policy"] = (
            f"Redis ({server}, {where}) runs with maxmemory-policy "
            f"{found['maxmemory_policy'] or '?'}: when full it evicts keys, accepted leads "
            "among them. Set maxmemory-policy noeviction (a full Redis then refuses writes "
            "and the intake answers 503)."
        )
    if wanted_fsync and found["appendfsync"] and found["appendfsync"] != wanted_fsync:
        problems["appendfsync"] = (
            f"Redis ({server}, {where}) runs with appendfsync {found['appendfsync']}, and "
            f"LEADFLOW_REDIS_APPENDFSYNC asks for {wanted_fsync}. Set appendfsync "
            f"{wanted_fsync} on the server."
        )
    return problems


def durability_findings() -> tuple[dict[tuple[str, str], str], dict[str, str]]:
    """({(server, setting): what is wrong, '' if right}, {server: error} for those that did not
    answer). Sets the gauge for the servers that answered."""
    problems: dict[tuple[str, str], str] = {}
    unanswered: dict[str, str] = {}
    for server, url in servers().items():
        try:
            found = server_settings(url)
        except redis.RedisError as error:
            unanswered[server] = f"Redis ({server}, {_where(url)}) did not answer: {error}"
            continue
        wanted = settings.ADMIT_WAIT_REPLICAS
        if server == "redis" and wanted > int(found["replicas"]):
            # Not a finding: a replica away for a while is an outage to ride out, not a setting.
            log.warning(
                "redis check: Redis (%s) has %s replicas connected and "
                "LEADFLOW_ADMIT_WAIT_REPLICAS is %d: admissions wait "
                "LEADFLOW_ADMIT_WAIT_TIMEOUT_MS for one that is not there",
                _where(url),
                found["replicas"],
                wanted,
            )
        for setting, problem in findings(server, url, found).items():
            problems[(server, setting)] = problem
            try:
                DURABILITY_OK.labels(server, setting).set(0 if problem else 1)
            except OSError:  # a metrics file that cannot be written is no reason to stop
                log.warning("redis check: the gauge could not be set", exc_info=True)
    return problems, unanswered


@checks.register(TAG, deploy=True)
def redis_durability_check(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """The system check: an error per finding in strict mode, else a warning."""
    if settings.REDIS_CHECKS == "off":
        return []
    level = checks.Error if settings.REDIS_CHECKS == "strict" else checks.Warning
    hint = "Or set LEADFLOW_REDIS_CHECKS=warn to start all the same (README 'Outages')."
    problems, unanswered = durability_findings()
    messages = [
        checks.Warning(f"{error}; its settings are checked when it does.", id="leadflow.W100")
        for error in unanswered.values()
    ]
    for (_, setting), problem in problems.items():
        if problem:
            messages.append(level(problem, hint=hint, id=f"leadflow.E10{SETTINGS.index(setting)}"))
    return messages


def redis_checks_run(process: str) -> None:
    """Once at a process's start: log each finding; in strict mode, refuse to start (raise
    RedisNotDurable). Then check again in a daemon thread, every interval."""
    if settings.REDIS_CHECKS == "off":
        return
    problems, unanswered = durability_findings()
    for error in unanswered.values():
        log.warning("redis check (%s): %s; checked again when it answers", process, error)
    wrong = [problem for problem in problems.values() if problem]
    strict = settings.REDIS_CHECKS == "strict"
    for problem in wrong:
        log.log(
            logging.CRITICAL if strict else logging.ERROR, "redis check (%s): %s", process, problem
        )
    if wrong and strict:
        raise RedisNotDurable(
            f"{process} refuses to start (LEADFLOW_REDIS_CHECKS=strict; 'warn' starts all the "
            f"same): {' '.join(wrong)}"
        )
    threading.Thread(
        target=_watch, args=(process, problems, bool(unanswered)), name="redis-checks", daemon=True
    ).start()


def _watch(process: str, known: dict[tuple[str, str], str], unanswered: bool) -> None:
    """Check again every interval (every few seconds while a server has not answered yet) and
    log what changed: a Redis restarted with other settings, or one checked for the first time."""
    while True:
        interval = settings.REDIS_CHECK_INTERVAL_SECONDS
        time.sleep(min(interval, _RETRY_SECONDS) if unanswered else interval)
        problems, missing = durability_findings()
        unanswered = unanswered and bool(missing)
        for key, problem in problems.items():
            before = known.get(key)
            if problem and problem != before:
                log.error("redis check (%s): %s", process, problem)
            elif before and not problem:
                log.warning("redis check (%s): %s %s is right now", process, *key)
            known[key] = problem


@signals.celeryd_after_setup.connect
def _check_worker_start(sender=None, **kwargs) -> None:
    # After worker_init (pool A's metrics directory is ready for the gauge), before the pool
    # starts and the worker consumes. Celery swallows a handler's exceptions: SystemExit is
    # what stops the worker.
    try:
        redis_checks_run(f"worker {sender or ''}".strip())
    except RedisNotDurable as refused:
        log.critical("%s", refused)
        raise SystemExit(1) from None
