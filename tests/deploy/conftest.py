"""Fixtures of the deploy tests: real processes (tests/deploy/processes.py), a queue of the
test's own."""

import uuid

import pytest

from leadflow.redis_conn import get_redis
from tests.deploy.processes import Starter


@pytest.fixture
def start(tmp_path):
    starter = Starter(tmp_path)
    yield starter
    starter.stop_all()


@pytest.fixture
def test_queue():
    name = f"test.shutdown.{uuid.uuid4().hex[:8]}"
    yield name
    get_redis().delete(name)
