"""Run one command with a deadline: `python -m bench.launch --max-seconds N -- COMMAND...`.

Every process the bench starts goes through this launcher, so none outlives the bench: the
command is stopped (SIGTERM, then SIGKILL of its whole process group) when the deadline
passes, when the launcher is told to stop, or when the bench driver dies (PR_SET_PDEATHSIG).
"""

import argparse
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time

_PR_SET_PDEATHSIG = 1
STOP_GRACE_SECONDS = 15.0


def die_with_parent(signum: int = signal.SIGKILL) -> None:
    """Ask the kernel to send `signum` to this process when its parent exits."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signum)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.launch")
    parser.add_argument("--max-seconds", type=float, required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command")

    stopping = False

    def stop(_signum, _frame) -> None:
        nonlocal stopping
        stopping = True

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    # The driver dying (even by SIGKILL) reaches the command through this SIGTERM.
    die_with_parent(signal.SIGTERM)
    if os.getppid() == 1:
        return 1  # the driver died before the line above took effect
    # Same process group as the launcher: the group is killed as a whole at the end, which
    # also catches grandchildren (gunicorn workers, prefork children) a master left behind.
    child = subprocess.Popen(command, preexec_fn=die_with_parent)
    deadline = time.monotonic() + args.max_seconds
    while child.poll() is None and not stopping and time.monotonic() < deadline:
        time.sleep(0.2)
    if child.poll() is None:
        if not stopping:
            print(f"launch: {command[0]} hit its deadline ({args.max_seconds:.0f} s)", flush=True)
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    # Anything the command left behind in the group (a worker whose master died first), only
    # if the group is the launcher's own: started without a session of its own, it would be the
    # caller's group.
    if os.getpgrp() != os.getpid():
        return child.returncode if child.returncode and child.returncode > 0 else 0
    for signum in (signal.SIGTERM, signal.SIGKILL):
        others = group_members(exclude=os.getpid())
        for pid in others:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        if others and signum == signal.SIGTERM:
            time.sleep(1.0)
    return child.returncode if child.returncode and child.returncode > 0 else 0


def group_members(exclude: int | None = None, pgid: int | None = None) -> list[int]:
    """Pids of the live processes in a process group (default: the launcher's)."""
    pgid = os.getpgrp() if pgid is None else pgid
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == exclude:
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is the state, fields[2] the process group; zombies are already gone.
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
