"""Django settings (DJANGO_SETTINGS_MODULE=leadflow.settings). Every value comes from the
environment (see README), with dev defaults, read by the typed readers of leadflow/env.py; a
bad value stops the process at start. One module per part, in this order, each importing what
it needs from the ones before; the timing invariants between them are system checks
(leadflow/checks.py)."""

from leadflow.settings.base import *  # noqa: F403
from leadflow.settings.celery import *  # noqa: F403
from leadflow.settings.operations import *  # noqa: F403
from leadflow.settings.pipeline import *  # noqa: F403
