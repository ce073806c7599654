"""Structured logs: JSON lines carrying the context bound for a request, a task or a lead."""

import io
import json
import logging

import pytest
import structlog
from celery import signals
from django.conf import settings

from leadflow.logs import RequestLogContextMiddleware, bind_log_context, log_context


@pytest.fixture
def log_lines():
    """Records of a logger, rendered by the formatter that settings.LOGGING configures."""
    spec = dict(settings.LOGGING["formatters"]["structured"])
    formatter = spec.pop("()")(**spec)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger("tests.deploy.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    structlog.contextvars.clear_contextvars()
    yield logger, lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)
    structlog.contextvars.clear_contextvars()


def test_a_log_line_is_one_json_object_with_the_bound_context(log_lines):
    logger, lines = log_lines
    bind_log_context(tenant=7, trace_id=None)
    with log_context(trace_id="9b1f0d5e"):
        logger.info("lead stored %s", "once", extra={"score": 80})
    logger.info("after")
    first, second = lines()
    assert first["event"] == "lead stored once"
    assert first["trace_id"] == "9b1f0d5e" and first["tenant"] == 7 and first["score"] == 80
    assert first["level"] == "info" and first["logger"] == "tests.deploy.logs"
    assert first["timestamp"].endswith("Z")
    assert "trace_id" not in second and second["tenant"] == 7


def test_an_exception_is_one_string_field_without_frame_locals(log_lines):
    logger, lines = log_lines
    secret = "sk-not-to-be-logged"  # noqa: F841 - a local the traceback must not show
    try:
        raise ValueError("bad lead")
    except ValueError:
        logger.exception("failed")
    [line] = lines()
    assert "ValueError: bad lead" in line["exception"]
    assert "sk-not-to-be-logged" not in json.dumps(line)


def test_each_request_starts_with_a_fresh_context_and_a_request_id(rf, log_lines):
    logger, lines = log_lines
    bind_log_context(tenant=1)  # left over from another request on this thread

    def view(request):
        logger.info("in the view")
        bind_log_context(tenant=2)
        from django.http import HttpResponse

        return HttpResponse()

    response = RequestLogContextMiddleware(view)(rf.get("/", HTTP_X_REQUEST_ID="abc-1"))
    logger.info("after the request")
    in_view, after = lines()
    assert in_view["request_id"] == "abc-1" and "tenant" not in in_view
    assert response.headers["X-Request-ID"] == "abc-1"
    assert "request_id" not in after and "tenant" not in after


def test_a_celery_task_logs_with_its_batch_context(log_lines):
    from workers.pool_a import qualify_leads

    logger, lines = log_lines
    signals.task_prerun.send(
        sender=qualify_leads,
        task_id="t-1",
        task=qualify_leads,
        args=[["{}", "{}"], "critical", "batch-9"],
        kwargs={},
    )
    logger.info("storing")
    signals.task_postrun.send(sender=qualify_leads, task_id="t-1", task=qualify_leads)
    logger.info("between tasks")
    during, between = lines()
    assert during["task_id"] == "t-1" and during["task"] == "pool_a.qualify_leads"
    assert during["tier"] == "critical" and during["batch_size"] == 2
    assert during["batch_id"] == "batch-9"
    assert "task_id" not in between


def test_a_task_context_follows_argument_names_not_positions(log_lines):
    from workers.pool_c import build_report

    logger, lines = log_lines
    signals.task_prerun.send(
        sender=build_report, task_id="t-2", task=build_report, args=[5, "daily", "2026-11-26"]
    )
    logger.info("building")
    [line] = lines()
    assert line["tenant"] == 5 and line["task"] == build_report.name
    assert "tier" not in line and "batch_id" not in line
