"""The URLs the public listener serves (apps/health/operator.py): those of leadflow/urls.py
that tenants and probes need, nothing of the operators'."""

from leadflow.urls import handler400, handler403, handler404, handler500, public_urlpatterns

__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]

urlpatterns = public_urlpatterns
