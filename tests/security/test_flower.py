"""Flower, started as the Procfile starts it: never without credentials (it refuses to start, and
refuses a weak password), the dashboard asks for them, and its API runs no task and controls no
worker, credentials or not. `make run`'s credentials are made once, kept mode 600, printed."""

import contextlib
import os
import signal
import stat
import subprocess
import sys

import httpx
import pytest

from apps.health.flower_credentials import credentials_ensure
from tests.deploy.procfile import procfile
from tests.live.api import wait_until
from tests.live.stack import ROOT, _die_with_parent, free_port

CREDENTIALS = ("ops", "a-long-enough-password-1")
ACTIONS = [
    "/api/task/async-apply/pool_a.qualify_batch",
    "/api/task/apply/pool_a.qualify_batch",
    "/api/task/send-task/pool_a.qualify_batch",
    "/api/task/revoke/0",
    "/api/task/abort/0",
    "/api/task/rate-limit/pool_a.qualify_batch",
    "/api/worker/shutdown/pool-a@host",
    "/api/worker/pool/grow/pool-a@host",
    "/api/worker/queue/add-consumer/pool-a@host",
]


def flower_argv(port: int) -> list[str]:
    argv = procfile()["flower"].split()
    assert argv[:4] == ["celery", "-A", "leadflow", "flower"]
    argv = [arg if not arg.startswith("--port=") else f"--port={port}" for arg in argv]
    return [sys.executable, "-m", *argv]


@contextlib.contextmanager
def flower(env_extra: dict[str, str]):
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("FLOWER_")}
    process = subprocess.Popen(
        flower_argv(port),
        cwd=ROOT,  # where flowerconfig.py is, as under `make run` and in the image
        env={**env, "LEADFLOW_REDIS_CHECKS": "off", **env_extra},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    try:
        yield process, f"http://127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.mark.parametrize(
    "credentials",
    [None, "admin:admin", "admin:replace-me", "ops:short", ":no-user-but-long-password"],
)
def test_flower_refuses_to_start_without_good_credentials(credentials):
    extra = {} if credentials is None else {"FLOWER_BASIC_AUTH": credentials}
    with flower(extra) as (process, _):
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 2, output
    assert "Flower refuses" in output


def test_flower_asks_for_credentials_and_its_api_changes_nothing():
    with flower({"FLOWER_BASIC_AUTH": ":".join(CREDENTIALS)}) as (process, url):

        def answering():
            assert process.poll() is None, process.stdout.read()
            with contextlib.suppress(httpx.TransportError):
                return httpx.get(f"{url}/healthcheck", timeout=2).status_code == 200
            return False

        wait_until(answering, timeout=60, interval=0.3, message="Flower answers")
        with httpx.Client(base_url=url, timeout=10) as anonymous:
            assert anonymous.get("/").status_code == 401
            assert anonymous.get("/api/workers").status_code == 401
            assert anonymous.get("/metrics").status_code == 200  # for Prometheus, by design
        with httpx.Client(base_url=url, timeout=10, auth=CREDENTIALS) as ops:
            assert ops.get("/").status_code == 200
            assert ops.get("/api/workers").status_code == 200  # reading stays
            for path in ACTIONS:
                assert ops.post(path, json={"args": []}).status_code == 404, path


def test_make_run_credentials_are_made_once_private_and_printed(tmp_path):
    path = tmp_path / "var" / "flower_credentials"
    first = credentials_ensure(path)
    user, _, password = first.partition(":")
    assert user == "leadflow" and len(password) >= 16
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert credentials_ensure(path) == first

    env = {key: value for key, value in os.environ.items() if key != "FLOWER_BASIC_AUTH"}
    printed = subprocess.run(
        [sys.executable, "-m", "apps.health.flower_credentials", str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert printed[-1] == first  # alone on the last line, like the demo key
    assert "5555" in printed[0]


def test_the_makefile_hands_the_credentials_to_flower():
    makefile = (ROOT / "Makefile").read_text()
    assert "python -m apps.health.flower_credentials" in makefile
    assert 'FLOWER_BASIC_AUTH="$${FLOWER_BASIC_AUTH:-$$(cat var/flower_credentials)}"' in makefile


def test_procfile_flower_runs_from_the_checkout_root():
    """flowerconfig.py is found in Flower's working directory: honcho runs the Procfile there."""
    assert (ROOT / "flowerconfig.py").exists()
    assert "--conf" not in procfile()["flower"]
