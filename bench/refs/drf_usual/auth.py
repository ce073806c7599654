"""Bearer keys checked against an in-process set (BENCH_API_KEYS): no SQL, like LeadFlow's cache.

Its own module: DRF imports the authentication class from settings while rest_framework.views
loads, so it must not live in a module that imports the views.
"""

import hashlib
import os

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication

_KEYS = {
    hashlib.sha256(key.encode()).hexdigest()
    for key in os.environ.get("BENCH_API_KEYS", "").split(",")
    if key
}


class Tenant:
    is_authenticated = True

    def __init__(self, digest: str) -> None:
        self.id = digest[:12]


class KeyAuthentication(BaseAuthentication):
    def authenticate(self, request):
        scheme, _, key = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        digest = hashlib.sha256(key.strip().encode()).hexdigest()
        if digest not in _KEYS:
            raise exceptions.AuthenticationFailed("unknown API key")
        return Tenant(digest), key

    def authenticate_header(self, request) -> str:
        return "Bearer"
