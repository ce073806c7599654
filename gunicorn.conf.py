"""gunicorn's configuration (`gunicorn -c gunicorn.conf.py …`): request limits answered in the
API's JSON error shape, and Prometheus multiprocess mode.

Each gunicorn worker is a process of its own, so /metrics (django-prometheus) must add up the
values of all of them: they are kept in files under PROMETHEUS_MULTIPROC_DIR. The master sets
that directory before forking, and before any worker imports prometheus_client (which reads it
at import): the operator's if given, else a fresh one under the temp directory, so two gunicorns
on one machine (`make run` and the tests' live stack) never mix their files. It is emptied at
start (a previous run's counters would add up) and, if it was made here, removed at exit.

A file outside the leadflow package, importing nothing of LeadFlow at load: importing the package
would import prometheus_client into the master before the directory is set, and the forked workers
would inherit its single-process mode.
"""

import json
import logging
import os
import random
import shutil
import tempfile

from gunicorn import util

_log = logging.getLogger("gunicorn.error")

_made_here: str | None = None

# Request limits, enforced by gunicorn before the application sees the request (README "The
# API"). gunicorn's own defaults, spelled out so the README and the answers can name them: they
# bound what a sync worker buffers for one request (100 x 8 KB). The application's own limits
# are tighter where a value is kept (an Idempotency-Key holds at most 255 characters: 400
# naming the header).
limit_request_line = 8190  # bytes of "METHOD /path?query HTTP/1.1": 414 beyond
limit_request_fields = 100  # header fields: 431 beyond
limit_request_field_size = 8190  # bytes of one header field, name and value: 431 beyond

# What gunicorn answers itself (a request it cannot parse, or past the limits above) in the
# API's one error shape, {"error", "detail"}, instead of its HTML page. gunicorn writes every
# such answer through util.write_error and offers no hook for it; replacing the function here
# (in the master, before the workers fork) covers every worker class, whatever `-k` the
# Procfile, compose or Kubernetes passes, which a worker subclass set in this file would not.
# tests/intake/test_hostile_live.py holds it to the JSON answers.
_GUNICORN_ERRORS = {
    400: ("bad_request", "the request is not valid HTTP/1.1"),
    403: ("forbidden", "the request is forbidden"),
    414: ("request_line_too_long", f"the request line is over {limit_request_line} bytes"),
    417: ("expectation_failed", "the Expect header is not supported"),
    431: (
        "header_too_large",
        f"a header field is over {limit_request_field_size} bytes (name and value), or there "
        f"are over {limit_request_fields} of them",
    ),
    501: ("not_implemented", "the transfer coding is not supported"),
}


def _write_error_json(sock, status_int: int, reason: str, mesg: str) -> None:
    code, detail = _GUNICORN_ERRORS.get(status_int, ("server_error", "an unexpected error"))
    if status_int == 400 and mesg:
        detail = f"{detail}: {mesg}"[:300]
    # Like every answer of the API, with an X-Request-Id that its log line carries: the
    # request's own was not read. The form of leadflow.logs.request_id_for's (not imported:
    # see above).
    request_id = f"{random.getrandbits(64):016x}"
    _log.warning(
        "gunicorn answered %d %s before the application (request id %s): %s",
        status_int,
        code,
        request_id,
        str(mesg)[:200],
        extra={"request_id": request_id, "status": status_int},
    )
    body = json.dumps({"error": code, "detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"X-Request-Id: {request_id}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


util.write_error = _write_error_json


def _operator_listener_check(server) -> None:
    """The Procfile, compose and k8s bind two ports: the public one and the operator listener
    (LEADFLOW_OPERATOR_PORT; apps/health/operator.py). Without the second, /metrics,
    /scaling/backlog and /admin are served nowhere (never on the public port): say so."""
    port = int(os.environ.get("LEADFLOW_OPERATOR_PORT") or 8001)
    bound = [address[1] for address in server.cfg.address if isinstance(address, tuple)]
    if port not in bound:
        server.log.warning(
            "no operator listener: nothing is bound to LEADFLOW_OPERATOR_PORT=%d, so /metrics, "
            "/scaling/backlog and /admin are not served (add -b <host>:%d)",
            port,
            port,
        )
    elif len(bound) == 1:
        server.log.warning("only the operator listener (:%d) is bound: no public port", port)


def on_starting(server) -> None:
    global _made_here
    _operator_listener_check(server)
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        path = _made_here = tempfile.mkdtemp(prefix="leadflow-api-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.remove(os.path.join(path, name))


def child_exit(server, worker) -> None:
    # A worker recycled by --max-requests: its live gauges go; its counters stay in the sum.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:
    if _made_here:
        shutil.rmtree(_made_here, ignore_errors=True)
