"""The WSGI application: the intake's POSTs on their lean path, everything else Django."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "leadflow.settings")

django_application = get_wsgi_application()

from apps.intake.lean import LeanIntake  # noqa: E402 - needs the settings configured above

application = LeanIntake(django_application)
