"""Fixtures of the outage tests: the test database's URL, an API environment like the live
stack's."""

import os
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings


def test_database_url() -> str:
    """DATABASE_URL, naming the test database pytest-django made."""
    test_db = settings.DATABASES["default"]["NAME"]
    return urlunsplit(urlsplit(os.environ["DATABASE_URL"])._replace(path=f"/{test_db}"))


@pytest.fixture(scope="module")
def api_env(django_db_setup) -> dict[str, str]:
    """What an outage test's API process runs with, before the test points it elsewhere."""
    return {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "LEADFLOW_TRUSTED_PROXIES": "1",
        "PYTHONUNBUFFERED": "1",
    }
