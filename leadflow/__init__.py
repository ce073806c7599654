"""LeadFlow: the Django project. Importing it loads the one Celery app."""

from leadflow.celery import app as celery_app

__all__ = ("celery_app",)
