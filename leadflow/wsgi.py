"""The WSGI application: the intake's POSTs on their fast path, everything else Django."""

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
