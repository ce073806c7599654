"""Structured logs: one JSON object a line, carrying the request, task, trace id and tenant known.

Every process logs through the standard library (Django, Celery, `logging.getLogger(__name__)`
in our modules) or through `structlog.get_logger()`; both end in one handler whose structlog
formatter renders JSON and merges the context bound with `bind_log_context` / `log_context`.
That context lives in contextvars, so it is per request, per Celery task and per thread.
"""

import contextlib
import inspect
import logging.config
import re
import uuid
from collections.abc import Iterator

import structlog
from celery import signals

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

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
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "structured",
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
    """A fresh log context per request, with a request id (the caller's X-Request-ID if sane).

    gunicorn's sync workers reuse a thread for request after request, so without the reset a
    tenant bound by one request would label the next one's logs.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        structlog.contextvars.clear_contextvars()
        given = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = given if _REQUEST_ID_OK.match(given) else uuid.uuid4().hex
        bind_log_context(request_id=request_id)
        try:
            response = self.get_response(request)
        finally:
            structlog.contextvars.clear_contextvars()
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
    )


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
