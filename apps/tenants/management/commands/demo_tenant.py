"""`manage.py demo_tenant`: make sure tenant "demo" exists and print a working API key for it.

Keys are stored hashed, so the demo key is kept in clear in var/demo_api_key (mode 600); it is
replaced when the file is missing or its key no longer authenticates (revoked, or a new DB).
"""

import os
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from apps.tenants.models import ApiKey, Tenant, api_key_digest
from apps.tenants.services import api_key_create, tenant_create

DEMO_TENANT_NAME = "demo"


def demo_key_file_default() -> Path:
    return Path(settings.BASE_DIR) / "var" / "demo_api_key"


def key_file_write(path: Path, raw_key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created 600 from the start (not chmod-ed after), so the key is never readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as key_file:
        key_file.write(raw_key + "\n")
    path.chmod(0o600)


def key_file_read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


class Command(BaseCommand):
    help = 'Ensure tenant "demo" exists and print its API key alone on the last line.'

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--key-file",
            type=Path,
            default=None,
            help="where the demo key is kept in clear (default: var/demo_api_key)",
        )

    @transaction.atomic
    def handle(self, *args, key_file: Path | None, **options) -> None:
        key_file = key_file or demo_key_file_default()
        # Locks the row, so two `make run` starting together agree on one key.
        tenant = Tenant.objects.select_for_update().filter(name=DEMO_TENANT_NAME).first()
        if tenant is None:
            tenant, raw_key = tenant_create(DEMO_TENANT_NAME)
            key_file_write(key_file, raw_key)
            state = "created"
        else:
            raw_key = key_file_read(key_file)
            if raw_key and self._key_authenticates(tenant, raw_key):
                state = "exists"
            else:
                raw_key = api_key_create(tenant, label="demo")
                key_file_write(key_file, raw_key)
                state = "exists, new key"
        if not tenant.is_active:
            self.stderr.write(f"tenant {tenant.name!r} is deactivated: its key is refused")
        self.stdout.write(
            f"Demo tenant {tenant.name!r} (id {tenant.id}, {state}). "
            f"API key, kept in {key_file} (send it as 'Authorization: Bearer <key>'):"
        )
        self.stdout.write(raw_key)

    @staticmethod
    def _key_authenticates(tenant: Tenant, raw_key: str) -> bool:
        return ApiKey.objects.filter(
            tenant=tenant, digest=api_key_digest(raw_key), revoked_at__isnull=True
        ).exists()
