"""The operator endpoints are not on the public port: /metrics (per-tenant series), the scaling
figures, the probes' error details and the admin answer only on the operator listener; the
public port keeps the API and probes that say nothing an outsider could use."""

import httpx
import pytest
from django.test import Client

from tests.live.api import auth
from tests.live.stack import free_port

OPERATOR_ONLY = ["/metrics", "/scaling/backlog", "/admin/", "/admin/login/", "/admin/status/"]

live = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("path", OPERATOR_ONLY)
def test_the_public_listener_does_not_serve_operator_paths(path):
    public = Client()  # Django's test client arrives on port 80: not the operator listener
    assert public.get(path).status_code == 404


@live
@pytest.mark.parametrize("path", OPERATOR_ONLY)
def test_operator_paths_answer_404_on_the_public_port_over_http(live_stack, path):
    with httpx.Client(base_url=live_stack.api_url, timeout=10) as public:
        response = public.get(path)
    assert response.status_code == 404
    assert "leadflow_" not in response.text


@live
def test_the_operator_listener_serves_metrics_scaling_admin_and_details(
    live_stack, operator, api, make_tenant
):
    _, key = make_tenant("operator")
    accepted = api.post("/api/v1/leads", json={"email": "ada@analytical.io"}, headers=auth(key))
    assert accepted.status_code == 202
    metrics = operator.get("/metrics")
    assert metrics.status_code == 200
    assert "leadflow_intake_decisions_total" in metrics.text  # the per-tenant series
    assert set(operator.get("/scaling/backlog").json()) == {
        "a",
        "b",
        "c",
        "forecast",
        "replicas",
        "frozen",
    }
    login = operator.get("/admin/login/")
    assert login.status_code == 200 and "csrfmiddlewaretoken" in login.text
    assert operator.get("/readyz").json()["checks"] == {"redis": "ok", "postgres": "ok"}


@live
def test_public_probes_say_which_dependency_failed_never_its_error(live_stack):
    with httpx.Client(base_url=live_stack.api_url, timeout=10) as public:
        assert public.get("/healthz").json() == {"status": "alive"}
        ready = public.get("/readyz").json()
    assert set(ready) == {"status", "failed", "checks"}
    assert set(ready["checks"].values()) <= {"ok", "failed"}


@pytest.mark.django_db
def test_a_check_error_is_told_on_the_operator_listener_only(settings, client):
    settings.REDIS_URL = settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"
    public = Client().get("/readyz").json()
    assert public["checks"]["redis"] == "failed" and public["failed"] == ["redis"]
    detailed = client.get("/readyz").json()  # tests/conftest.py: the operator listener
    assert detailed["checks"]["redis"].startswith("ConnectionError")
