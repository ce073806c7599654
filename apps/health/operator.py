"""Which listener a request came in on, and so which URLs it may reach.

gunicorn binds two ports (Procfile, compose, k8s): the public one (8000) for tenants, and the
operator listener (LEADFLOW_OPERATOR_PORT, 8001), which is never published to the Internet:
Prometheus, KEDA and operators reach it from inside (a NetworkPolicy says who, in k8s). A
request on the operator port reaches every URL (leadflow/urls.py); any other request reaches
only the public ones (leadflow/public_urls.py): the API and the probes. So the per-tenant
metrics, the scaling figures, the probes' error details and the admin are not on the public
port, and a listener added later is public unless it is the operator port (fail closed).

SERVER_PORT is the port of the socket gunicorn accepted the connection on, not anything the
client sent (gunicorn/http/wsgi.py), so a client cannot choose it.
"""

from django.conf import settings

PUBLIC_URLCONF = "leadflow.public_urls"


def on_operator_listener(meta: dict) -> bool:
    return meta.get("SERVER_PORT") == str(settings.OPERATOR_PORT)


class ListenerUrlconfMiddleware:
    """Before any middleware that resolves URLs (CommonMiddleware's APPEND_SLASH)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not on_operator_listener(request.META):
            request.urlconf = PUBLIC_URLCONF
        return self.get_response(request)
