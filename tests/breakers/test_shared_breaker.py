"""The circuit breakers' seeded figures, across two real processes sharing Redis: open after 5
failures in a row, half-open after the reset timeout, closed after 3 successes in a row, the
failures and the successes counted whichever process made them."""

import os
import subprocess
import sys
import threading
import time
import uuid

import pybreaker
import pytest
from django.conf import settings as django_settings

from leadflow.breakers import (
    breaker,
    breaker_failing,
    breaker_recovered_at,
    breaker_recoveries,
    breaker_state,
)
from leadflow.redis_conn import get_redis
from leadflow.redis_keys import breaker_namespace
from tests.live.stack import ROOT

RESET_SECONDS = 1.0


class DependencyDown(Exception):
    pass


def _fail() -> None:
    raise DependencyDown


class OtherProcess:
    """tests/breakers/breaker_process.py: a process of its own with its own breaker object."""

    def __init__(self, name: str) -> None:
        env = {**os.environ, "LEADFLOW_BREAKER_RESET_SECONDS": str(RESET_SECONDS)}
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "tests.breakers.breaker_process", name],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.popen.stdout.readline().strip() == "ready"  # before any log line

    def call(self, command: str) -> tuple[str, str]:
        self.popen.stdin.write(command + "\n")
        self.popen.stdin.flush()
        return self._answer()

    def _answer(self) -> tuple[str, str]:
        while True:  # its log lines may come first
            line = self.popen.stdout.readline()
            assert line, "the other process ended"
            if line.startswith("= "):
                _, outcome, state = line.split()
                return outcome, state

    def succeed_at(self, at: float) -> None:
        """Eight threads of the other process each make a successful call at `at`."""
        self.popen.stdin.write(f"succeed-at\n{at}\n")
        self.popen.stdin.flush()
        self._answer()

    def stop(self) -> None:
        self.popen.stdin.close()
        self.popen.wait(timeout=10)


@pytest.fixture
def name(settings):
    """A breaker of the test's own (none cached yet), with a short reset timeout here too."""
    settings.BREAKER_RESET_SECONDS = RESET_SECONDS
    created = f"test-{uuid.uuid4().hex[:8]}"
    yield created
    client = get_redis()
    for key in client.scan_iter(f"{breaker_namespace(created)}:*"):
        client.delete(key)


@pytest.fixture
def other(name):
    process = OtherProcess(name)
    yield process
    process.stop()


def here(name: str, command: str) -> tuple[str, str]:
    try:
        breaker(name).call(_fail if command == "fail" else (lambda: None))
        outcome = "ok"
    except DependencyDown:
        outcome = "failed"
    except pybreaker.CircuitBreakerError:
        outcome = "refused"
    return outcome, breaker_state(name)


def test_the_seeded_figures_are_the_defaults():
    # The test process runs with the defaults (only the live stack's processes get a short reset).
    assert django_settings.BREAKER_FAIL_MAX == 5
    assert django_settings.BREAKER_SUCCESS_THRESHOLD == 3
    assert django_settings.BREAKER_RESET_SECONDS == 60.0


def test_open_half_open_closed_across_two_processes(name, other):
    # Five failures in a row, split between the processes, open it (the 5th trips it).
    assert [here(name, "fail") for _ in range(3)] == [("failed", "closed")] * 3
    assert other.call("fail") == ("failed", "closed")
    assert other.call("fail") == ("refused", "open")
    # Open for both: calls are refused at once, without reaching the dependency.
    assert here(name, "succeed") == ("refused", "open")
    assert other.call("succeed") == ("refused", "open")

    time.sleep(RESET_SECONDS + 0.2)
    # Half-open: calls go through; three successes in a row, from either process, close it.
    assert other.call("succeed") == ("ok", "half-open")
    assert here(name, "succeed") == ("ok", "half-open")
    assert other.call("succeed") == ("ok", "closed")
    assert here(name, "succeed") == ("ok", "closed")
    # The recovery is recorded by the success that closed it, once.
    recovered = breaker_recovered_at(name)
    assert recovered is not None and time.time() - recovered < 5
    assert not breaker_failing(name)
    here(name, "succeed")
    assert breaker_recovered_at(name) == recovered


def test_a_failure_while_half_open_opens_it_again_for_both(name, other):
    for _ in range(5):
        other.call("fail")
    assert breaker_state(name) == "open"
    time.sleep(RESET_SECONDS + 0.2)

    assert here(name, "succeed") == ("ok", "half-open")
    assert other.call("fail") == ("refused", "open")  # the trial failed: open again
    assert here(name, "succeed") == ("refused", "open")
    time.sleep(RESET_SECONDS + 0.2)
    # The count starts again: two successes before the failure do not carry over.
    assert other.call("succeed") == ("ok", "half-open")
    assert here(name, "succeed") == ("ok", "half-open")
    assert other.call("succeed") == ("ok", "closed")
    assert breaker_recovered_at(name) is not None


def test_the_success_count_is_not_reset_by_a_process_that_notices_half_open(name, other):
    """pybreaker as shipped resets the shared count whenever a process first sees half-open;
    three successes must close it whatever each process had cached."""
    for _ in range(5):
        here(name, "fail")
    time.sleep(RESET_SECONDS + 0.2)

    assert here(name, "succeed") == ("ok", "half-open")
    assert here(name, "succeed") == ("ok", "half-open")
    # The other process last saw it closed: its first call sees half-open, and counts the 3rd.
    assert other.call("succeed") == ("ok", "closed")


def test_a_recovery_is_recorded_once_when_the_dependency_answers_after_failing(name, other):
    assert here(name, "succeed") == ("ok", "closed")
    assert breaker_recovered_at(name) is None  # no failure before: nothing recovered

    # Failures too few to open it, then an answer: a recovery as well, seen by either process.
    assert here(name, "fail") == ("failed", "closed")
    assert other.call("fail") == ("failed", "closed")
    assert breaker_failing(name)
    assert other.call("succeed") == ("ok", "closed")
    first = breaker_recovered_at(name)
    assert first is not None and not breaker_failing(name)
    assert here(name, "succeed") == ("ok", "closed")
    assert breaker_recovered_at(name) == first  # the next answers record nothing more

    # While half-open, the 1st and 2nd successes are not yet a recovery; the 3rd closes it.
    for _ in range(5):
        here(name, "fail")
    time.sleep(RESET_SECONDS + 0.2)
    assert other.call("succeed") == ("ok", "half-open")
    assert here(name, "succeed") == ("ok", "half-open")
    assert breaker_recovered_at(name) == first
    assert other.call("succeed") == ("ok", "closed")
    assert breaker_recovered_at(name) > first


def test_many_successes_at_once_in_two_processes_record_one_recovery(name, other):
    """The closing moment seen by many threads of two processes at once: recorded once."""
    for _ in range(2):
        here(name, "fail")
    assert breaker_failing(name)
    at = time.time() + 0.5

    threads = [threading.Thread(target=_succeed_at, args=(name, at)) for _ in range(8)]
    for thread in threads:
        thread.start()
    other.succeed_at(at)
    for thread in threads:
        thread.join()

    assert breaker_recoveries(name) == 1
    assert not breaker_failing(name)


def _succeed_at(name: str, at: float) -> None:
    time.sleep(max(at - time.time(), 0))
    with breaker(name).calling():
        pass
