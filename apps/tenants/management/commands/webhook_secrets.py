"""`manage.py webhook_secrets list|create|revoke TENANT`: rotate a tenant's webhook secrets.

A rotation: `create` (the new secret is printed once, alone on the last line; deliveries are
signed with it and the older one), give it to the receiver, then `revoke` (the older one, or
`--prefix` to name one). A tenant has at most two active secrets and never fewer than one.
"""

from django.core.management.base import BaseCommand, CommandError

from apps.tenants.models import Tenant, WebhookSecret
from apps.tenants.services import (
    TenantError,
    webhook_secret_create,
    webhook_secret_revoke,
    webhook_secret_revoke_older,
)


class Command(BaseCommand):
    help = "List, create (printed once, on the last line) or revoke a tenant's webhook secrets."

    def add_arguments(self, parser) -> None:
        parser.add_argument("action", choices=("list", "create", "revoke"))
        parser.add_argument("tenant", help="the tenant's name")
        parser.add_argument(
            "--prefix",
            help="revoke: the secret whose first characters these are (as `list` shows them); "
            "default: the older of the two active ones",
        )

    def handle(self, *args, action: str, tenant: str, prefix: str | None, **options) -> None:
        found = Tenant.objects.filter(name=tenant).first()
        if found is None:
            raise CommandError(f"no tenant named {tenant!r}")
        try:
            if action == "create":
                self._create(found)
            elif action == "revoke":
                self._revoke(found, prefix)
            else:
                self._list(found)
        except TenantError as exc:
            raise CommandError(str(exc)) from exc

    def _list(self, tenant: Tenant) -> None:
        for secret in WebhookSecret.objects.filter(tenant=tenant):
            state = f"revoked {secret.revoked_at:%Y-%m-%d %H:%M}" if secret.is_revoked else "active"
            self.stdout.write(
                f"{secret.prefix}…  created {secret.created_at:%Y-%m-%d %H:%M}  {state}"
            )

    def _create(self, tenant: Tenant) -> None:
        secret = webhook_secret_create(tenant)
        self.stdout.write(
            f"New webhook secret of {tenant.name!r}, shown only this once. Deliveries are signed "
            "with it and the older one until `webhook_secrets revoke` ends the rotation:"
        )
        self.stdout.write(secret)  # alone on the last line, for `tail -n 1`

    def _revoke(self, tenant: Tenant, prefix: str | None) -> None:
        if prefix:
            active = WebhookSecret.objects.filter(tenant=tenant, revoked_at__isnull=True)
            matching = [secret for secret in active if secret.secret.startswith(prefix)]
            if len(matching) != 1:
                raise CommandError(
                    f"{len(matching)} active secrets of {tenant.name!r} start with {prefix!r}"
                )
            secret = matching[0]
            webhook_secret_revoke(secret)
        else:
            secret = webhook_secret_revoke_older(tenant)
        self.stdout.write(f"Revoked webhook secret {secret.prefix}… of {tenant.name!r}.")
