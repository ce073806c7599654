"""Starting and killing the harness's own processes: each in a session (process group) of its own,
dying with the harness (PR_SET_PDEATHSIG), killed only by pid or process group."""

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from bench.launch import die_with_parent

ROOT = Path(__file__).resolve().parent.parent


def spawn(argv: list[str], log_path: Path, env: dict | None = None, **popen) -> subprocess.Popen:
    """argv in its own session, output appended to log_path, SIGKILLed if the harness dies.

    PR_SET_PDEATHSIG fires when the *thread* that forked exits: call this only from threads that
    live as long as the run (the main thread, the supervisor's).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            argv,
            cwd=popen.pop("cwd", ROOT),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=popen.pop("stdin", subprocess.DEVNULL),
            start_new_session=True,
            preexec_fn=die_with_parent,
            **popen,
        )


def children(pid: int) -> list[int]:
    """The direct children of a process (Linux /proc), e.g. a prefork master's pool processes."""
    found = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as listing:
                found += [int(child) for child in listing.read().split()]
    return found


def kill_group(popen: subprocess.Popen, signum: int = signal.SIGKILL) -> None:
    """Signal a process started by spawn() and everything in its group."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signum)


def stop(popen: subprocess.Popen, grace: float = 15.0, signum: int = signal.SIGTERM) -> None:
    """Ask nicely, then SIGKILL the whole group; always reaps."""
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            popen.send_signal(signum)
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=grace)
    kill_group(popen)
    popen.wait()


def wait_until(check, timeout: float, interval: float = 0.2, what: str = "") -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    if what:
        raise TimeoutError(f"{what} not within {timeout:.0f} s")
    return False
