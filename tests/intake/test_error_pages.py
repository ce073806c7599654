"""Outside the API's DRF views, Django's own answers (an unknown URL, a bad Host header, an
unhandled error) come in the API's JSON error shape, not as HTML pages; an outage met there is
a 503 with Retry-After; only the admin's pages on the operator listener stay HTML."""

import pytest
from django.test import Client

import leadflow.public_urls
import leadflow.urls

UNKNOWN = ["/no/such/page", "/api/v1/nope", "/api/v2/leads", "/admin/", "/%C3%A9t%C3%A9"]


def _json_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == "application/json", response["Content-Type"]
    body = response.json()
    assert body["error"] == code and body["detail"], body
    return body


@pytest.mark.parametrize("path", UNKNOWN)
def test_an_unknown_url_on_the_public_listener_is_a_json_404(path):
    body = _json_error(Client().get(path), 404, "not_found")
    assert "/api/v1/" in body["detail"]  # where the API is


def test_an_unknown_api_url_on_the_operator_listener_is_a_json_404(client):
    _json_error(
        client.post("/api/v1/nope", data="{}", content_type="application/json"), 404, "not_found"
    )


def test_the_admin_keeps_its_html_404_for_operators(admin_client):
    response = admin_client.get("/admin/no/such/page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_a_host_not_allowed_is_a_json_400(settings):
    settings.ALLOWED_HOSTS = ["api.example"]
    _json_error(Client(HTTP_HOST="evil.example").get("/healthz"), 400, "bad_request")


def test_both_listeners_use_the_json_handlers():
    for urlconf in (leadflow.urls, leadflow.public_urls):
        assert urlconf.handler404 == "apps.health.error_views.not_found"
        assert urlconf.handler500 == "apps.health.error_views.server_error"
        assert urlconf.handler400 == "apps.health.error_views.bad_request"


@pytest.fixture
def boom_client(client):
    """The operator listener (the public one serves its own URLconf), with the failing views."""
    client.raise_request_exception = False
    return client


@pytest.mark.urls("tests.intake.boom_urls")
def test_an_unhandled_error_is_a_json_500(boom_client):
    _json_error(boom_client.get("/boom/bug"), 500, "internal_error")


@pytest.mark.urls("tests.intake.boom_urls")
@pytest.mark.parametrize(("path", "retry_after"), [("/boom/redis", "1"), ("/boom/postgres", "5")])
def test_an_outage_outside_the_api_views_is_a_503_with_retry_after(boom_client, path, retry_after):
    response = boom_client.get(path)
    _json_error(response, 503, "unavailable")
    assert response["Retry-After"] == retry_after


@pytest.mark.urls("tests.intake.boom_urls")
def test_an_admin_error_for_operators_stays_html(boom_client):
    response = boom_client.get("/admin/boom")
    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.django_db(transaction=True)
def test_the_live_api_answers_an_unknown_url_in_json(api):
    response = api.get("/api/v1/no-such-endpoint")
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"] == "not_found"
    assert response.headers["X-Request-Id"]
