"""`manage.py create_tenant NAME`: a new tenant and its first API key, printed once."""

from django.core.management.base import BaseCommand, CommandError

from apps.tenants.services import TenantError, tenant_create


class Command(BaseCommand):
    help = "Create a tenant and print its first API key alone on the last line."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="unique tenant name")

    def handle(self, *args, name: str, **options) -> None:
        try:
            tenant, raw_key = tenant_create(name)
        except TenantError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"Created tenant {tenant.name!r} (id {tenant.id}). Its API key, shown only this "
            "once (send it as 'Authorization: Bearer <key>'):"
        )
        # Alone on the last line, so scripts can take it with `tail -n 1`.
        self.stdout.write(raw_key)
