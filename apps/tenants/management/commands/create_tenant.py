"""`manage.py create_tenant NAME [--crm-webhook-url URL] [limits]`: a new tenant; its webhook
secret and first API key are printed once.

The limits can be changed later in Django admin; omitted ones take the model's defaults. The
URL is checked by the SSRF guard (leadflow/outbound_guard.py) before anything is created.
"""

import argparse

from django.core.management.base import BaseCommand, CommandError

from apps.tenants.models import webhook_signing_secrets
from apps.tenants.services import TenantError, tenant_create


def _number(convert, minimum, what: str):
    """An argparse type: `convert` the text, refusing values under `minimum` with a reason."""

    def parse(raw: str):
        try:
            value = convert(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{raw!r} is not {what}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{raw!r} must be at least {minimum}")
        return value

    return parse


_positive_int = _number(int, 1, "a whole number")
_non_negative_number = _number(float, 0, "a number")


# option -> (Tenant field, parser, help)
LIMIT_OPTIONS = {
    "--rate": ("rate_limit_per_second", _positive_int, "requests per second (default 1000)"),
    "--per-ip-rate": (
        "per_ip_rate_limit_per_second",
        _positive_int,
        "requests per second from one IP address (default: no per-IP limit)",
    ),
    "--critical-capacity": (
        "critical_capacity",
        _positive_int,
        "critical credits the bucket holds (default 100)",
    ),
    "--critical-refill": (
        "critical_refill_per_second",
        _non_negative_number,
        "critical credits added back per second (default 10)",
    ),
    "--hourly-budget": (
        "hourly_budget",
        _positive_int,
        "leads accepted per clock hour (default 1,000,000)",
    ),
}


class Command(BaseCommand):
    help = "Create a tenant and print its first API key alone on the last line."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="unique tenant name")
        parser.add_argument(
            "--crm-webhook-url",
            default="",
            help="where pool C posts the tenant's leads (default: the local CRM adapter)",
        )
        for option, (field, parse, help_text) in LIMIT_OPTIONS.items():
            parser.add_argument(option, dest=field, type=parse, help=help_text)

    def handle(self, *args, name: str, crm_webhook_url: str, **options) -> None:
        limits = {
            field: options[field]
            for field, _, _ in LIMIT_OPTIONS.values()
            if options.get(field) is not None
        }
        try:
            tenant, raw_key = tenant_create(name, crm_webhook_url=crm_webhook_url, **limits)
        except TenantError as exc:
            raise CommandError(str(exc)) from exc
        [secret] = webhook_signing_secrets(tenant)
        self.stdout.write(
            f"Its webhook secret, shown only this once (receivers verify deliveries with it, "
            f"README: Webhooks):\n{secret}"
        )
        self.stdout.write(
            f"Created tenant {tenant.name!r} (id {tenant.id}). Its API key, shown only this "
            "once (send it as 'Authorization: Bearer <key>'):"
        )
        # Alone on the last line, so scripts can take it with `tail -n 1`.
        self.stdout.write(raw_key)
