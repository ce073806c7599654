"""Structured logs: JSON lines carrying the context bound for a request, a task or a lead."""

import io
import json
import logging
import re
import uuid

import pytest
import structlog
from celery import signals
from django.conf import settings

from leadflow.logs import (
    RequestLogContextMiddleware,
    bind_log_context,
    log_context,
    request_id_for,
)


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

        return HttpResponse(status=404)

    middleware = RequestLogContextMiddleware(view)
    response = middleware(rf.get("/", HTTP_X_REQUEST_ID="abc-1"))
    logger.warning("Not Found: /")  # as Django logs a 4xx, once every middleware returned
    made_up = middleware(rf.get("/", HTTP_X_REQUEST_ID="a" * 65))
    in_view, answered, second = lines()
    assert in_view["request_id"] == "abc-1" and "tenant" not in in_view
    assert answered["request_id"] == "abc-1" and answered["tenant"] == 2
    assert response.headers["X-Request-Id"] == "abc-1"
    assert "tenant" not in second  # the next request starts afresh
    assert second["request_id"] == made_up.headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{16}", second["request_id"])


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("req-123", True),
        ("A.b_c-9", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("", False),
        ("has space", False),
        ("semi;colon", False),
        ("näive", False),
        ("line\nbreak", False),
    ],
)
def test_a_callers_request_id_is_kept_only_when_short_and_plain(given, kept):
    assert (request_id_for(given) == given) is kept
    if not kept:
        assert re.fullmatch(r"[0-9a-f]{16}", request_id_for(given))
    assert request_id_for(None) != request_id_for(None)


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


def _celery_record(logger_name: str, msg: str, context: dict) -> logging.LogRecord:
    return logging.getLogger(logger_name).makeRecord(
        logger_name, logging.INFO, __file__, 1, msg, (context,), None, extra={"data": context}
    )


def test_a_task_done_is_one_line_with_its_batch_size_tier_and_duration(log_lines):
    from leadflow.logs import TaskLogLines

    lines = TaskLogLines()
    context = {
        "id": "t-9",
        "name": "pool_a.qualify_leads",
        "args": "['<500 leads>', 'normal', 'batch-3']",
        "kwargs": "{}",
        "runtime": 0.8412,
        "return_value": "None",
    }
    received = _celery_record("celery.worker.strategy", "Task %(name)s[%(id)s] received", context)
    assert not lines.filter(received)  # shown only at DEBUG
    held = {**context, "eta": "2026-12-02T07:00:00+00:00"}  # a retry held for its countdown
    assert lines.filter(_celery_record("celery.worker.strategy", received.msg, held))

    bind_log_context(task_id="t-9", tier="normal", batch_size=500)
    done = _celery_record(
        "celery.app.trace",
        "Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s",
        dict(context),
    )
    assert lines.filter(done)
    assert done.getMessage() == "pool_a.qualify_leads: 500 leads, normal, 0.84 s"
    assert done.duration_seconds == 0.8412 and not hasattr(done, "data")

    long_args = {**context, "args": repr([str(uuid.uuid4()) for _ in range(500)])}
    retry = _celery_record("celery.app.trace", "Task %(name)s[%(id)s] retry: %(exc)s", long_args)
    assert lines.filter(retry)
    assert len(retry.data["args"]) < 250 and retry.data["args"].endswith("characters)")


def test_a_task_of_one_lead_logs_under_its_trace_id(log_lines):
    from workers.pool_a import qualify_leads
    from workers.pool_c import sync_leads

    logger, lines = log_lines
    entry = json.dumps({"trace_id": "5f0c", "tenant_id": 1})
    for task, args in (
        (qualify_leads, [[entry], "normal", "b-1"]),
        (sync_leads, [["5f0c"], "low"]),
    ):
        signals.task_prerun.send(sender=task, task_id="t-3", task=task, args=args, kwargs={})
        logger.info("working")
        signals.task_postrun.send(sender=task, task_id="t-3", task=task)
    signals.task_prerun.send(
        sender=sync_leads, task_id="t-4", task=sync_leads, args=[["a", "b"], "low"], kwargs={}
    )
    logger.info("two leads")
    one_a, one_c, two = lines()
    assert one_a["trace_id"] == one_c["trace_id"] == "5f0c"
    assert "trace_id" not in two and two["batch_size"] == 2
