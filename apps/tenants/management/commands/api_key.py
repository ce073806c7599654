"""`manage.py api_key`: list, create, rotate and revoke tenants' API keys.

    manage.py api_key list [TENANT]
    manage.py api_key create TENANT [--label L] [--expires-in 90d]
    manage.py api_key rotate KEY [--overlap 24h] [--expires-in 90d]
    manage.py api_key revoke KEY

KEY is a key's id or its prefix as listed (or the whole key). A new key is printed once, alone on
the last line (scripts take it with `tail -n 1`); it is stored hashed. Rotation with overlap:
`rotate` makes the replacement now and lets the old key work until the overlap ends; `revoke`
ends it sooner, once the clients use the new one.
"""

import argparse
import re
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from apps.tenants.models import ApiKey, Tenant
from apps.tenants.services import (
    TenantError,
    api_key_create,
    api_key_find,
    api_key_revoke,
    api_key_rotate,
)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+)([smhd]?)")


def duration(raw: str) -> timedelta:
    """An argparse type: '90d', '24h', '30m', '45s', or plain seconds."""
    match = _DURATION.fullmatch(raw.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a duration like 90d, 24h, 30m or 45s")
    return timedelta(seconds=int(match[1]) * _UNITS[match[2] or "s"])


def _when(moment) -> str:
    return f"{moment:%Y-%m-%d %H:%M}" if moment else "-"


class Command(BaseCommand):
    help = "List, create, rotate and revoke API keys (a new key is printed once, last line)."

    def add_arguments(self, parser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        listing = actions.add_parser("list", help="keys, newest first")
        listing.add_argument("tenant", nargs="?", help="only this tenant's")
        create = actions.add_parser("create", help="a new key for a tenant")
        create.add_argument("tenant")
        create.add_argument("--label", default="", help="what the key is for")
        create.add_argument("--expires-in", type=duration, help="e.g. 90d (default: never)")
        rotate = actions.add_parser("rotate", help="a replacement; the old key expires later")
        rotate.add_argument("key", help="id or prefix")
        rotate.add_argument(
            "--overlap",
            type=duration,
            default=timedelta(hours=24),
            help="how long the old key keeps working (default 24h; 0 ends it at once)",
        )
        rotate.add_argument("--expires-in", type=duration, help="for the new key (default never)")
        revoke = actions.add_parser("revoke", help="refused from now on")
        revoke.add_argument("key", help="id or prefix")

    def handle(self, *args, action: str, **options) -> None:
        try:
            getattr(self, f"_{action}")(**options)
        except TenantError as error:
            raise CommandError(str(error)) from error

    def _list(self, tenant: str | None, **_) -> None:
        keys = ApiKey.objects.select_related("tenant").order_by("-created_at")
        if tenant:
            keys = keys.filter(tenant__name=tenant)
        self.stdout.write(
            f"{'id':>6}  {'prefix':<13} {'tenant':<20} {'state':<8} {'last used':<16} "
            f"{'expires':<16} label"
        )
        for key in keys:
            self.stdout.write(
                f"{key.pk:>6}  {key.prefix + '…':<13} {key.tenant.name[:20]:<20} "
                f"{key.state:<8} {_when(key.last_used_at):<16} {_when(key.expires_at):<16} "
                f"{key.label}"
            )

    def _create(self, tenant: str, label: str, expires_in: timedelta | None, **_) -> None:
        owner = Tenant.objects.filter(name=tenant).first()
        if owner is None:
            raise TenantError(f"no tenant named {tenant!r}")
        expires_at = timezone.now() + expires_in if expires_in else None
        raw_key = api_key_create(owner, label=label, expires_at=expires_at)
        self._shown_once(f"New API key for {owner.name!r}, expires {_when(expires_at)}", raw_key)

    def _rotate(self, key: str, overlap: timedelta, expires_in: timedelta | None, **_) -> None:
        old = api_key_find(key)
        expires_at = timezone.now() + expires_in if expires_in else None
        new, raw_key = api_key_rotate(old, overlap, expires_at=expires_at)
        old.refresh_from_db()
        self._shown_once(
            f"Key {old.prefix}… of {old.tenant.name!r} works until {_when(old.expires_at)} "
            f"(revoke it sooner with `api_key revoke {old.pk}`). Its replacement (id {new.pk})",
            raw_key,
        )

    def _revoke(self, key: str, **_) -> None:
        found = api_key_find(key)
        api_key_revoke(found)
        self.stdout.write(f"Revoked {found.prefix}… (id {found.pk}) of {found.tenant.name!r}.")

    def _shown_once(self, what: str, raw_key: str) -> None:
        self.stdout.write(
            f"{what}, shown only this once (send it as 'Authorization: Bearer <key>'):"
        )
        self.stdout.write(raw_key)
