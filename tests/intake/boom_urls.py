"""A URLconf for tests/intake/test_error_pages.py: views that fail as a bug or an outage would,
outside the API's DRF views, with the project's own error handlers."""

import redis
from django.db import OperationalError
from django.urls import path

from leadflow.urls import handler500  # noqa: F401 - Django looks it up here


def _raise(error: Exception):
    def view(request):
        raise error

    return view


urlpatterns = [
    path("boom/bug", _raise(RuntimeError("a bug"))),
    path("boom/redis", _raise(redis.ConnectionError("Connection refused"))),
    path("boom/postgres", _raise(OperationalError("server closed the connection"))),
    path("admin/boom", _raise(RuntimeError("a bug in an admin page"))),
]
