"""Which errors are outages (503 with Retry-After) and which are bugs (left to answer 500): the
errors as redis-py and Django raise them, Redis's replies parsed by redis-py's own parser."""

import pytest
import redis
from django.db import DataError, InterfaceError, OperationalError, ProgrammingError
from redis._parsers.base import BaseParser

from apps.intake.errors import outage


def redis_reply(text: str) -> redis.RedisError:
    """The exception redis-py raises for this error reply."""
    return BaseParser.parse_error(text)


@pytest.mark.parametrize(
    "error",
    [
        redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
        redis.TimeoutError("Timeout reading from socket"),
        redis_reply("OOM command not allowed when used memory > 'maxmemory'."),
        redis_reply(
            "ERR Error running script (call to f_0d5c): @user_script:63: @user_script: 63: "
            "-OOM command not allowed when used memory > 'maxmemory'."
        ),
        redis_reply("LOADING Redis is loading the dataset in memory"),
        redis_reply("BUSY Redis is busy running a script. You can only call SCRIPT KILL"),
        redis_reply("READONLY You can't write against a read only replica."),
        redis_reply("MISCONF Redis is configured to save RDB snapshots, but it's unable to"),
        OperationalError("the connection is closed"),
        InterfaceError("connection already closed"),
    ],
    ids=lambda error: f"{type(error).__name__}-{str(error)[:20]}",
)
def test_a_dependency_that_does_not_answer_is_a_503_with_retry_after(error):
    answer = outage(error)
    assert answer is not None and answer.status_code == 503
    assert answer.body["error"] == "unavailable"
    assert int(answer.headers["Retry-After"]) >= 1


@pytest.mark.parametrize(
    "error",
    [
        redis_reply("ERR Error running script (call to f_0d5c): @user_script:9: attempt to "),
        redis_reply("WRONGTYPE Operation against a key holding the wrong kind of value"),
        DataError("invalid byte sequence for encoding UTF8: 0x00"),
        ProgrammingError("column does not exist"),
        ValueError("a bug"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_a_bug_is_not_called_an_outage(error):
    assert outage(error) is None


def test_a_redis_timeout_says_the_lead_may_have_been_accepted():
    answer = outage(redis.TimeoutError("Timeout reading from socket"))
    assert "duplicate" in answer.detail
    assert "nothing was accepted" in outage(redis.ConnectionError("refused")).detail
