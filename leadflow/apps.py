"""The project core as a Django app: it has no models, only the system checks it registers."""

from django.apps import AppConfig


class LeadflowConfig(AppConfig):
    name = "leadflow"

    def ready(self) -> None:
        from leadflow import checks  # noqa: F401 - registers the timing invariants
