"""gunicorn's configuration (`gunicorn -c gunicorn.conf.py …`): Prometheus multiprocess mode.

Each gunicorn worker is a process of its own, so /metrics (django-prometheus) must add up the
values of all of them: they are kept in files under PROMETHEUS_MULTIPROC_DIR. The master sets
that directory before forking, and before any worker imports prometheus_client (which reads it
at import): the operator's if given, else a fresh one under the temp directory, so two gunicorns
on one machine (`make run` and the tests' live stack) never mix their files. It is emptied at
start (a previous run's counters would add up) and, if it was made here, removed at exit.

A file outside the leadflow package, and importing nothing at load: importing the package would
import prometheus_client into the master before the directory is set, and the forked workers
would inherit its single-process mode.
"""

import os
import shutil
import tempfile

_made_here: str | None = None


def on_starting(server) -> None:
    global _made_here
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
