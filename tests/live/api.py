"""What tests of the live platform share: the auth header, and waiting for an outcome."""

import time


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def wait_until(predicate, timeout: float, interval: float = 0.1, message: str = ""):
    """Poll until predicate() is truthy and return its value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s: {message}")
