"""A second process for the breaker tests: it keeps its own breaker object (as a pool does)
and, for each line on stdin ("fail", "succeed"), makes one call through breaker(argv[1]) (or,
for "succeed-at" and a time on the next line, eight threads each make one then), and
answers "= <outcome> <state>" on stdout (other lines are its logs). It stops when stdin closes.

Run: python -m tests.breakers.breaker_process NAME (settings from the environment).
"""

import os
import sys
import threading
import time

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "leadflow.settings")
django.setup()

import pybreaker  # noqa: E402 - after django.setup()

from leadflow.breakers import breaker  # noqa: E402


class DependencyDown(Exception):
    pass


def _fail() -> None:
    raise DependencyDown


def main() -> None:
    name = sys.argv[1]
    print("ready", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "succeed-at":  # then a time: many threads succeed at that moment
            at = float(sys.stdin.readline())
            threads = [threading.Thread(target=_succeed_at, args=(name, at)) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            print("=", "ok", breaker(name).current_state, flush=True)
            continue
        call = _fail if command == "fail" else (lambda: None)
        try:
            breaker(name).call(call)
            outcome = "ok"
        except DependencyDown:
            outcome = "failed"
        except pybreaker.CircuitBreakerError:
            outcome = "refused"
        print("=", outcome, breaker(name).current_state, flush=True)


def _succeed_at(name: str, at: float) -> None:
    time.sleep(max(at - time.time(), 0))
    with breaker(name).calling():
        pass


if __name__ == "__main__":
    main()
