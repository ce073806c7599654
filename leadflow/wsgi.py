"""The WSGI application: the intake's POSTs on their fast path, everything else Django."""

import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "leadflow.settings")

django_application = get_wsgi_application()

from leadflow.checks import timing_checks_run  # noqa: E402 - needs the settings configured
from leadflow.redis_checks import redis_checks_run  # noqa: E402 - needs the settings configured

# Settings whose timings contradict each other stop the worker's boot (leadflow/checks.py).
timing_checks_run("api")

# Once per gunicorn worker, before it serves: in strict mode a Redis that would lose accepted
# leads stops the worker's boot, and gunicorn then stops ("Worker failed to boot").
redis_checks_run("api")

from apps.intake.fast_post import ROUTES, FastPostIntake  # noqa: E402 - needs the settings configured above
from leadflow.metrics import IntakeRequestMetrics  # noqa: E402
from leadflow.redis_conn import api_timeouts_use  # noqa: E402

# A process serving requests answers 503 when Redis does not answer within the API's timeouts.
api_timeouts_use()

# The fast POST path never reaches django-prometheus's middleware: count and time it here.
application = IntakeRequestMetrics(FastPostIntake(django_application), ROUTES)

# The garbage collector, tuned for a process that serves requests (measured in process):
# everything loaded so far (Django, the apps: ~120,000 objects) is never garbage, so it leaves
# the collector's generations, and a full collection no longer walks it (~70 ms, paid by some
# request's answer, against ~0 once frozen). The youngest generation is collected after 10,000
# net new objects instead of 700, above what a batch of 500 leads holds at once (~6 objects a
# lead): a batch no longer pays ~3 collections of objects it still uses (~0.6 µs a lead). The
# intake makes few reference cycles (tracebacks on error paths): those wait a little longer.
gc.freeze()
gc.set_threshold(10_000, *gc.get_threshold()[1:])
