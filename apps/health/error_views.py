"""What Django answers outside a DRF view (an unknown URL, a bad Host header, an unhandled
error), in the API's one error shape (apps/intake/errors.py) instead of its HTML pages: a client
of the API reads JSON whatever it hit. The admin's pages (on the operator listener) keep
Django's HTML, for people.

An unhandled error that is a dependency's outage (Redis, PostgreSQL) is a 503 with Retry-After
here too, as in the API's views.
"""

import sys

from django.http import JsonResponse
from django.views import defaults

from apps.health.operator import on_operator_listener
from apps.intake.errors import error_body, outage


def _for_people(request) -> bool:
    return request.path.startswith("/admin/") and on_operator_listener(request.META)


def not_found(request, exception):
    if _for_people(request):
        return defaults.page_not_found(request, exception)
    detail = (
        f"no such URL: {request.path[:200]}; the API is under /api/v1/"
        " (its documentation: /api/docs/)"
    )
    return JsonResponse(error_body("not_found", detail), status=404)


def bad_request(request, exception):
    return JsonResponse(error_body("bad_request", "the request could not be read"), status=400)


def forbidden(request, exception):
    return JsonResponse(error_body("forbidden", "not allowed"), status=403)


def server_error(request):
    # Django calls this inside its `except`: the error being handled is still at hand.
    unavailable = outage(sys.exc_info()[1])
    if unavailable is not None:
        return JsonResponse(unavailable.body, status=503, headers=unavailable.headers)
    if _for_people(request):
        return defaults.server_error(request)
    detail = "an unexpected error; it is logged with this request's X-Request-ID"
    return JsonResponse(error_body("internal_error", detail), status=500)
