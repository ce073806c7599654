"""The policy as control last read it (apps/control/database_work.py): kept in memory and copied
to Redis, so a control process started while PostgreSQL is away applies the operators' last
overrides instead of the defaults."""

import pytest

from apps.control.database_work import PolicyCache
from apps.control.models import Mode, Policy
from leadflow.redis_conn import get_redis
from leadflow.redis_keys import CONTROL_POLICY_KEY


@pytest.fixture
def policy_copy():
    """The live stack's control keeps the same copy: put it back after the test."""
    client = get_redis()
    saved = client.get(CONTROL_POLICY_KEY)
    client.delete(CONTROL_POLICY_KEY)
    yield
    if saved is None:
        client.delete(CONTROL_POLICY_KEY)
    else:
        client.set(CONTROL_POLICY_KEY, saved)


def test_a_process_that_never_read_the_policy_uses_the_copy_then_the_defaults(policy_copy):
    assert PolicyCache().current().forced_mode == ""  # nothing read, no copy: the defaults

    read = Policy(forced_mode=Mode.THIN, pause_low=True, sampling_percent=10, updated_by="ops")
    PolicyCache().update(read)  # another process read it from PostgreSQL

    fallback = PolicyCache().current()  # a process started while PostgreSQL is away
    assert (fallback.forced_mode, fallback.pause_low, fallback.sampling_percent) == (
        Mode.THIN,
        True,
        10,
    )
    assert fallback.updated_by == "ops"
