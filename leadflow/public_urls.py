"""The URLs the public listener serves (apps/health/operator.py): those of leadflow/urls.py
that tenants and probes need, nothing of the operators'."""

from leadflow.urls import public_urlpatterns

urlpatterns = public_urlpatterns
