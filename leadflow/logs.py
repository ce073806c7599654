"""Structured logs: one JSON object a line, carrying the request, task, trace id and tenant known.

Every process logs through the standard library (Django, Celery, `logging.getLogger(__name__)`
in our modules) or through `structlog.get_logger()`; both end in one handler whose structlog
formatter renders JSON and merges the context bound with `bind_log_context` / `log_context`.
That context lives in contextvars, so it is per request, per Celery task and per thread.
"""

import contextlib
import inspect
import json
import logging.config
import random
import re
from collections.abc import Iterable, Iterator

import structlog
from celery import signals

REQUEST_ID_HEADER = "X-Request-Id"
# A caller's id is kept when it is short and plain (it goes into every log line and back in
# the answer); anything else is replaced, never echoed.
_REQUEST_ID_OK = re.compile(r"[A-Za-z0-9._-]{1,64}")
_random_bits = random.getrandbits


def request_id_for(given: str | None) -> str:
    """The request's id: the caller's X-Request-Id if it is 1-64 of [A-Za-z0-9._-], else a new
    one: 16 hex digits, 64 random bits (unique enough to find a request in the logs). An id is
    no secret: the random module's generator (reseeded in every forked worker) gives them for
    a tenth of os.urandom's system call, on every request of the intake's hot path."""
    if given and _REQUEST_ID_OK.fullmatch(given):
        return given
    return f"{_random_bits(64):016x}"


_SHARED_PROCESSORS = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.stdlib.ExtraAdder(),
]


def logging_config(log_format: str, level: str) -> dict:
    """The LOGGING dict for settings; also points structlog's own loggers at the same handler."""
    if log_format not in ("json", "console"):
        raise ValueError(f"LEADFLOW_LOG_FORMAT must be json or console, got {log_format!r}")
    renderer = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_SHARED_PROCESSORS,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {
                "()": structlog.stdlib.ProcessorFormatter,
                "foreign_pre_chain": _SHARED_PROCESSORS,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    # The traceback as one string field: no frame locals (they can hold leads'
                    # personal data or keys), and one line of JSON per record still.
                    structlog.processors.format_exc_info,
                    renderer,
                ],
            }
        },
        "filters": {"task_lines": {"()": "leadflow.logs.TaskLogLines"}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "structured",
                "filters": ["task_lines"],
            }
        },
        "root": {"handlers": ["stdout"], "level": level},
        "loggers": {
            # Django's default console handler would print a second, plain copy under DEBUG.
            "django": {"handlers": [], "level": level, "propagate": True},
        },
    }


def bind_log_context(**values) -> None:
    """Add fields (trace_id=, tenant=, …) to every log line of this request, task or thread."""
    structlog.contextvars.bind_contextvars(
        **{key: value for key, value in values.items() if value is not None}
    )


def leads_named(trace_ids: Iterable) -> dict:
    """Log fields naming the leads a line is about (as `extra=`): `trace_id` for one lead,
    `trace_ids` and `leads` (how many) for several, so a lead's trace id finds every line about
    it, whichever way it failed."""
    ids = [str(trace_id) for trace_id in trace_ids]
    if len(ids) == 1:
        return {"trace_id": ids[0]}
    return {"trace_ids": ids, "leads": len(ids)}


@contextlib.contextmanager
def log_context(**values) -> Iterator[None]:
    """bind_log_context for a block only, e.g. one lead inside a batch."""
    tokens = structlog.contextvars.bind_contextvars(
        **{key: value for key, value in values.items() if value is not None}
    )
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)


class RequestLogContextMiddleware:
    """A fresh log context per request, with a request id (the caller's X-Request-Id if sane),
    answered in X-Request-Id. (The intake's POSTs do the same on their fast path.)

    gunicorn's sync workers reuse a thread for request after request, so without the reset a
    tenant bound by one request would label the next one's logs. The context stays bound once
    the answer is made: Django logs a 4xx or 5xx answer ("Not Found: /api/v1/leads/…") after
    every middleware has returned, and that line is the request's too.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        structlog.contextvars.clear_contextvars()
        request_id = request_id_for(request.META.get("HTTP_X_REQUEST_ID"))
        bind_log_context(request_id=request_id)
        response = self.get_response(request)  # Django turns exceptions into answers
        response.headers[REQUEST_ID_HEADER] = request_id
        return response


# --- Celery: the worker logs through Django's LOGGING, and each task gets its own context ---


@signals.setup_logging.connect
def _celery_uses_django_logging(**kwargs) -> None:
    # A receiver here stops Celery from installing its own plain-text handlers (including the
    # task logger's, which does not propagate), so worker and task logs are JSON like the rest.
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)


@signals.task_prerun.connect
def _task_log_context(task_id=None, task=None, args=None, kwargs=None, **extra) -> None:
    """Bind the task and what its arguments say, by their names in the task's signature
    (trace_ids / entries: the batch; tier; batch_id; tenant_id), whatever their order."""
    structlog.contextvars.clear_contextvars()
    try:
        given = inspect.signature(task.run).bind_partial(*(args or ()), **(kwargs or {}))
    except (AttributeError, TypeError, ValueError):
        given = None
    named = given.arguments if given else {}
    batch = named.get("trace_ids", named.get("entries"))
    bind_log_context(
        task_id=task_id,
        task=getattr(task, "name", None),
        tier=named.get("tier"),
        batch_size=len(batch) if isinstance(batch, list) else None,
        batch_id=named.get("batch_id"),
        tenant=named.get("tenant_id"),
        # A batch of one lead (a retry, a replay, a tenant's CRM group): every line of the task
        # is about that lead.
        trace_id=_lone_trace_id(batch),
    )


def _lone_trace_id(batch) -> str | None:
    if not isinstance(batch, list) or len(batch) != 1:
        return None
    lead = batch[0]
    if isinstance(lead, str) and lead.startswith("{"):  # an inbox entry (pool A)
        try:
            lead = json.loads(lead).get("trace_id")
        except (ValueError, AttributeError):
            return None
    return str(lead) if lead else None


@signals.task_postrun.connect
def _task_log_context_clear(**kwargs) -> None:
    structlog.contextvars.clear_contextvars()


@signals.before_task_publish.connect
def _args_summarized(body=None, headers=None, **kwargs) -> None:
    """A batch's arguments, as logs and Flower show them: its size, not its 500 trace ids or
    inbox entries (which hold e-mails and names Flower's users need not read)."""
    if headers is None or not isinstance(body, tuple | list) or not body:
        return
    args = body[0]
    if args and isinstance(args[0], list):
        headers["argsrepr"] = repr([f"<{len(args[0])} leads>", *args[1:]])


# --- Celery's own lines about tasks: one short line per batch ---

# Celery's messages (celery/app/trace.py, celery/worker/strategy.py), matched as they are.
_CELERY_RECEIVED = "Task %(name)s[%(id)s] received"
_CELERY_SUCCEEDED = "Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s"
_ARGS_REPR_MAX_CHARS = 200


class TaskLogLines(logging.Filter):
    """Celery's lines about a task, made readable: one line per batch when it is done,
    "pool_a.qualify_leads: 500 leads, normal, 0.84 s" (with task_id, tier, batch_size and
    duration_seconds as fields), instead of "received" and "succeeded" lines that printed the
    task's arguments. "received" shows for a message held for its countdown (a retry: when it
    came, and its eta) and otherwise under LEADFLOW_LOG_LEVEL=DEBUG only; a retry's or a
    failure's line is Celery's, its arguments cut to 200 characters (a message published without
    our summary: before_task_publish below)."""

    def filter(self, record: logging.LogRecord) -> bool:
        data = getattr(record, "data", None)
        if not isinstance(data, dict) or not record.name.startswith("celery."):
            return True
        if record.msg == _CELERY_RECEIVED and not data.get("eta"):
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        if record.msg == _CELERY_SUCCEEDED:
            self._batch_line(record, data)
            return True
        for name in ("args", "kwargs"):
            value = data.get(name)
            if isinstance(value, str) and len(value) > _ARGS_REPR_MAX_CHARS:
                data[name] = value[:_ARGS_REPR_MAX_CHARS] + f"… ({len(value)} characters)"
        return True

    @staticmethod
    def _batch_line(record: logging.LogRecord, data: dict) -> None:
        bound = structlog.contextvars.get_contextvars()  # the task's own (task_prerun)
        parts = [str(data.get("name", "task"))]
        if bound.get("batch_size") is not None:
            size = bound["batch_size"]
            parts.append(f"{size} lead" if size == 1 else f"{size} leads")
        if bound.get("tier"):
            parts.append(str(bound["tier"]))
        runtime = float(data.get("runtime") or 0.0)
        record.msg = "%s: %s, %.2f s" if len(parts) > 1 else "%s%s: done in %.2f s"
        record.args = (parts[0], ", ".join(parts[1:]), runtime)
        record.duration_seconds = round(runtime, 4)
        del record.data
