"""leadflow/supervise.py, the restart wrapper on the Procfile's lines, with real processes: it
restarts a child that exits (growing back-off, its exit code logged), passes SIGTERM and SIGINT
on and then stops for good, leaves no process behind, and keeps `make run` (honcho) up when
one of its processes exits."""

import os
import re
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.deploy.processes import SUPERVISE, pid_alive
from tests.deploy.procfile import ROOT, procfile_supervised

# A child that says when it is ready and which signal it got, then exits 0 a little later (as a
# worker finishing its batch does). Its source has no "child up" in one piece: the supervisor's
# log line quotes the command.
GRACEFUL_CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    def stop(signum, frame):
        print(f"child got {signal.Signals(signum).name}", flush=True)
        time.sleep(0.5)
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("child", "up", flush=True)
    while True:
        time.sleep(0.1)
    """
)


def env() -> dict[str, str]:
    # The venv's python first on PATH, as `make run` has it (leadflow/devstack.py).
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PATH": path}


def started_pids(log: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"started pid (\d+)", log)]


def wait_until(condition, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        time.sleep(0.05)


def test_every_procfile_process_runs_under_the_supervisor():
    assert all(procfile_supervised().values()), procfile_supervised()


def test_a_child_that_exits_is_restarted_with_a_growing_backoff(start):
    child = [sys.executable, "-c", "import sys; print('child up', flush=True); sys.exit(3)"]
    argv = [*SUPERVISE, "--backoff-min", "0.1", "--backoff-max", "0.4", "--", *child]
    supervisor = start(argv, env(), "supervise")
    supervisor.wait_for("restart 5 in", timeout=30)

    log = supervisor.log()
    assert "ERROR pid" in log and "exited with code 3" in log
    delays = [float(delay) for delay in re.findall(r"restart \d+ in ([\d.]+) s", log)]
    assert delays[:5] == [0.1, 0.2, 0.4, 0.4, 0.4]
    assert log.count("child up") >= 5
    assert supervisor.popen.poll() is None

    supervisor.sigterm()  # between two runs: it stops at once, and cleanly
    assert supervisor.popen.wait(timeout=10) == 0
    assert supervisor.log().rstrip().endswith("stopped")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_is_passed_to_the_child_which_is_not_restarted(start, signum):
    supervisor = start([*SUPERVISE, "--", sys.executable, "-c", GRACEFUL_CHILD], env(), "sup")
    supervisor.wait_for("child up")
    [child_pid] = started_pids(supervisor.log())

    supervisor.popen.send_signal(signum)
    assert supervisor.popen.wait(timeout=10) == 0  # the child's own exit code
    log = supervisor.log()
    assert f"child got {signum.name}" in log
    assert started_pids(log) == [child_pid] and "restart 1" not in log
    assert not pid_alive(child_pid)


def test_a_child_killed_by_the_stop_it_was_asked_for_is_a_clean_stop(start):
    # A child still starting (a worker restarted after recycling, its signal handlers not yet
    # installed) dies of the SIGTERM passed on: what was asked, so the supervisor exits 0.
    child = [sys.executable, "-c", "import time; print('child', 'up', flush=True); time.sleep(60)"]
    supervisor = start([*SUPERVISE, "--", *child], env(), "sup")
    supervisor.wait_for("child up")

    supervisor.sigterm()
    assert supervisor.popen.wait(timeout=10) == 0
    assert "was killed by SIGTERM" in supervisor.log()


def test_what_an_exited_child_leaves_in_its_group_is_killed(start, tmp_path):
    """A child that exits leaving a process of its own behind: the leftover goes with it."""
    pid_file = tmp_path / "grandchild.pid"
    child = [
        "sh",
        "-c",
        f'sleep 300 & echo $! >> {pid_file}; echo "child up"; sleep 0.5; exit 1',
    ]
    supervisor = start([*SUPERVISE, "--backoff-min", "0.5", "--", *child], env(), "sup")
    supervisor.wait_for("restart 1 in")
    first_grandchild = int(pid_file.read_text().split()[0])
    wait_until(lambda: not pid_alive(first_grandchild), 10, "the first grandchild to go")

    supervisor.sigterm()
    assert supervisor.popen.wait(timeout=10) is not None
    for pid in map(int, pid_file.read_text().split()):
        wait_until(lambda pid=pid: not pid_alive(pid), 10, f"grandchild {pid} to go")


def test_a_killed_supervisor_takes_its_child_with_it(start):
    supervisor = start([*SUPERVISE, "--", sys.executable, "-c", GRACEFUL_CHILD], env(), "sup")
    supervisor.wait_for("child up")
    [child_pid] = started_pids(supervisor.log())

    supervisor.popen.kill()  # SIGKILL: no handler runs; the kernel tells the child
    supervisor.popen.wait(timeout=10)
    wait_until(lambda: not pid_alive(child_pid), 10, "the child to die with its supervisor")


def test_make_run_stays_up_when_one_process_exits_and_stops_on_sigterm(start, tmp_path):
    """honcho, as `make run` starts it, on a Procfile of two supervised lines: one process
    exits again and again, the other keeps running; SIGTERM to honcho stops both."""
    steady = f"{sys.executable} -c 'import time; print(\"steady up\", flush=True); time.sleep(300)'"
    flaky = f"{sys.executable} -c 'import sys; sys.exit(1)'"
    procfile = tmp_path / "Procfile"
    procfile.write_text(
        f"flaky: python leadflow/supervise.py --backoff-min 0.2 -- {flaky}\n"
        f"steady: python leadflow/supervise.py -- {steady}\n"
    )
    honcho = str(Path(sys.executable).parent / "honcho")
    run = start([honcho, "start", "-f", str(procfile), "-d", str(ROOT)], env(), "honcho")
    run.wait_for("steady up")
    run.wait_for("restart 3 in", timeout=30)
    assert run.popen.poll() is None, "honcho stopped the platform"
    assert "sending SIGTERM" not in run.log()
    steady_pids = [
        int(pid)
        for pid in re.findall(
            r"supervise\[python\]: started pid (\d+): \S+ -c import time", run.log()
        )
    ]
    assert len(steady_pids) == 1

    run.sigterm()
    run.popen.wait(timeout=20)
    wait_until(lambda: not pid_alive(int(steady_pids[0])), 10, "the steady process to stop")
    assert "steady" in run.log() and "stopped" in run.log()
