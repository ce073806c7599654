"""Keep one process running under `make run`: restart it when it exits, stop it when asked.

    python leadflow/supervise.py [--name NAME] -- COMMAND...
    python -m leadflow.supervise [--name NAME] -- COMMAND...   (the same, slower to start)

The Procfile runs it by path: `-m` would import the leadflow package first, and with it Celery,
Django and prometheus_client (0.3 s and ~30 MB more per process, and metric files written under
pool A's PROMETHEUS_MULTIPROC_DIR); by path it imports only the standard library.

honcho (the Procfile runner of `make run`) stops the whole platform as soon as one process
exits, so without this a worker recycling itself (workers/recycle.py) or a process that died
would take everything down. Here:

- the child runs in a process group of its own, and dies with this process (PR_SET_PDEATHSIG),
  so a SIGKILLed supervisor leaves no orphan; whatever the child leaves behind in its group
  when it exits is killed too;
- SIGTERM, SIGINT and SIGQUIT are forwarded to the child alone (as compose and Kubernetes send
  them to a container's main process: a Celery or gunicorn master manages its own children);
  then this waits for the child and exits with its code, without restarting it;
- any other exit of the child is logged on stderr with its code and the child is started
  again after a back-off that doubles with each quick exit (from --backoff-min to
  --backoff-max seconds) and starts over once a child has run --stable-seconds.

Production does not use this: compose's `restart: unless-stopped` and Kubernetes' restart
policy supervise the containers there (README "Health, logs, shutdown").
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
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


def log(name: str, message: str) -> None:
    # Never raises: a closed stderr must not keep the supervisor from stopping its child.
    with contextlib.suppress(OSError, ValueError):
        print(f"supervise[{name}]: {message}", file=sys.stderr, flush=True)


def _child_setup() -> None:
    """In the child, before exec: its own process group, and SIGKILL when the supervisor dies
    (Linux; elsewhere an orphan is possible if the supervisor itself is SIGKILLed)."""
    os.setpgid(0, 0)
    for signum in STOP_SIGNALS:  # the supervisor's handlers must not be inherited as ignored
        signal.signal(signum, signal.SIG_DFL)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with code {returncode}"


class Supervisor:
    def __init__(
        self,
        argv: list[str],
        name: str,
        backoff_min: float = 1.0,
        backoff_max: float = 30.0,
        stable_seconds: float = 60.0,
    ) -> None:
        self.argv = argv
        self.name = name
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.stable_seconds = stable_seconds
        self.child: subprocess.Popen | None = None
        self.stopping = False
        self.stop_signals: set[int] = set()  # the stop signals passed on to the child
        self.restarts = 0

    def _on_signal(self, signum, _frame) -> None:
        if not self.stopping:
            log(self.name, f"{signal.Signals(signum).name} received: stopping, no restart")
        self.stopping = True
        self.stop_signals.add(signum)
        if self.child is not None and self.child.poll() is None:
            # Each signal is passed on, so a second Ctrl-C means to the child what it always
            # meant (Celery: cold shutdown).
            with contextlib.suppress(ProcessLookupError):
                self.child.send_signal(signum)

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def _run_once(self) -> tuple[str, int]:
        """Start the child and wait for it: (what happened, its exit code)."""
        self.child = None
        try:
            child = subprocess.Popen(self.argv, preexec_fn=_child_setup)
        except OSError as error:
            return f"{self.argv[0]!r} could not be started: {error}", 127
        self.child = child
        log(self.name, f"started pid {child.pid}: {' '.join(self.argv)}")
        if self.stopping:  # the signal came while the child was being started
            with contextlib.suppress(ProcessLookupError):
                child.terminate()
        # wait() is retried across signals (PEP 475); the handler runs in between.
        returncode = child.wait()
        # Whatever the child left in its process group (a stray grandchild) goes with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        return f"pid {child.pid} {describe_exit(returncode)}", returncode

    def run(self) -> int:
        """Run the child until told to stop. Exit code: the stopped child's, else 0."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_signal)
        # A closed terminal means stop, as Ctrl-C does; the child is told with SIGTERM.
        signal.signal(signal.SIGHUP, lambda _signum, frame: self._on_signal(signal.SIGTERM, frame))
        quick_exits = 0
        while not self.stopping:
            started = time.monotonic()
            what, returncode = self._run_once()
            if self.stopping:
                log(self.name, f"stopped: {what}")
                if returncode < 0 and -returncode in self.stop_signals | {signal.SIGTERM}:
                    # Killed by the stop it was asked for (a child still starting has no
                    # handler yet; SIGTERM when the child was started after the signal): a
                    # clean stop.
                    return 0
                return 128 - returncode if returncode < 0 else returncode
            ran = time.monotonic() - started
            quick_exits = 0 if ran >= self.stable_seconds else quick_exits + 1
            delay = min(self.backoff_max, self.backoff_min * 2 ** max(0, quick_exits - 1))
            self.restarts += 1
            log(
                self.name,
                f"{'ERROR ' if returncode else ''}{what} after {ran:.1f} s; "
                f"restart {self.restarts} in {delay:.1f} s",
            )
            self._sleep(delay)
        log(self.name, "stopped")
        return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m leadflow.supervise",
        description="Restart COMMAND when it exits; forward SIGTERM/SIGINT/SIGQUIT and stop.",
    )
    parser.add_argument("--name", help="how log lines name the process (default: COMMAND)")
    parser.add_argument("--backoff-min", type=float, default=1.0, help="first delay (s)")
    parser.add_argument("--backoff-max", type=float, default=30.0, help="longest delay (s)")
    parser.add_argument(
        "--stable-seconds",
        type=float,
        default=60.0,
        help="a child that ran this long resets the back-off",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("nothing to run: python -m leadflow.supervise -- COMMAND...")
    supervisor = Supervisor(
        command,
        name=args.name or os.path.basename(command[0]),
        backoff_min=args.backoff_min,
        backoff_max=args.backoff_max,
        stable_seconds=args.stable_seconds,
    )
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
