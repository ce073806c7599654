"""Flower's configuration: Flower reads `flowerconfig.py` from its working directory at start
(its --conf default), which is the repository root under `make run` and /app in the image, so
every Flower started from LeadFlow gets this, whatever its command line.

1. Never without credentials. Flower 2 serves its UI to anyone when neither --basic-auth /
   FLOWER_BASIC_AUTH nor --auth (OAuth) is set: here it refuses to start instead, and refuses
   a password under 16 characters or a placeholder (deploy/k8s/secret.yaml's replace-me).
   `make run` generates credentials in var/flower_credentials and prints them.
2. Read-only. Flower's HTTP API can run any task with any arguments, revoke or time-limit
   tasks, shut workers down and resize their pools (POST /api/task/..., /api/worker/...), with
   the same credentials that show the dashboard. LeadFlow is operated from the Django admin
   (modes, pauses, replays), so those endpoints are removed: they answer 404.
What stays open: /metrics and /healthcheck (Flower never asks credentials for them), for
Prometheus and the probes; they show worker names, task names and counts, no task arguments.
"""

import sys

from flower import urls as flower_urls
from tornado.options import options as flower_options
from tornado.web import RequestHandler

MIN_PASSWORD_LENGTH = 16
PLACEHOLDERS = ("replace-me", "admin", "password", "changeme")


def _credentials_refusal() -> str:
    """Why Flower must not start with the credentials it was given ('' when they are fine)."""
    if flower_options.auth:
        return ""  # OAuth (--auth): the identity provider decides
    credentials = [c for c in (flower_options.basic_auth or []) if c]
    if not credentials:
        return (
            "Flower refuses to start without credentials: set FLOWER_BASIC_AUTH=user:password "
            "(`make run` generates them in var/flower_credentials) or --auth for OAuth"
        )
    for credential in credentials:
        user, _, password = credential.partition(":")
        if not user or len(password) < MIN_PASSWORD_LENGTH or password.lower() in PLACEHOLDERS:
            return (
                f"Flower refuses the credentials of user {user!r}: FLOWER_BASIC_AUTH needs "
                f"user:password with a password of at least {MIN_PASSWORD_LENGTH} characters, "
                "not a placeholder (python -c 'import secrets; print(secrets.token_urlsafe(18))')"
            )
    return ""


def _changes_state(handler) -> bool:
    """An API handler that acts (POST), rather than reads: task apply/send/abort/revoke/limits,
    worker shutdown, pool and consumer control."""
    spec = handler if isinstance(handler, tuple) else (handler.regex.pattern, handler.handler_class)
    handler_class = spec[1]
    acts = getattr(handler_class, "post", None) is not RequestHandler.post  # not the 405 default
    return handler_class.__module__.startswith("flower.api") and acts


_refusal = _credentials_refusal()
if _refusal:
    print(_refusal, file=sys.stderr)
    raise SystemExit(2)

# The list flower.app builds its Application from (imported by reference there, so it is
# changed in place, before the Application exists).
flower_urls.handlers[:] = [h for h in flower_urls.handlers if not _changes_state(h)]
