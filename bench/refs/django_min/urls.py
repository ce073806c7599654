from django.http import JsonResponse
from django.urls import path


def lead_create(request):
    request.body  # noqa: B018 - read it, as any view that takes a lead must
    return JsonResponse({"status": "queued"}, status=202)


urlpatterns = [
    path("api/v1/leads", lead_create),
    path("api/v1/leads/batch", lead_create),
]
