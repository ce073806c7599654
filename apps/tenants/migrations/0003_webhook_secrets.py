"""Standard Webhooks secrets, mandatory: one generated for every existing tenant; the optional
body-only HMAC key (crm_webhook_secret) goes; tenants' webhook URLs are checked by the SSRF
guard when saved."""

import base64
import secrets

import django.db.models.deletion
from django.db import migrations, models

import apps.tenants.models


def _secret_generate() -> str:
    # As apps.tenants.models.webhook_secret_generate, frozen here as migrations should be.
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def secrets_generate(apps, schema_editor) -> None:
    """One active secret for each tenant that has none. It is shown to nobody: the tenant's
    operator rotates (a new one, shown once, then revokes this one) to get one to give out."""
    Tenant = apps.get_model("tenants", "Tenant")
    WebhookSecret = apps.get_model("tenants", "WebhookSecret")
    with_active = WebhookSecret.objects.filter(revoked_at__isnull=True).values("tenant_id")
    without = Tenant.objects.exclude(pk__in=with_active)
    WebhookSecret.objects.bulk_create(
        [WebhookSecret(tenant=tenant, secret=_secret_generate()) for tenant in without]
    )


class Migration(migrations.Migration):

    dependencies = [
        ('tenants', '0002_admission_limits'),
    ]

    operations = [
        migrations.CreateModel(
            name='WebhookSecret',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('secret', models.CharField(max_length=100)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('revoked_at', models.DateTimeField(blank=True, null=True)),
                ('tenant', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='webhook_secrets', to='tenants.tenant')),
            ],
            options={
                'ordering': ['-created_at', '-id'],
            },
        ),
        migrations.RunPython(secrets_generate, migrations.RunPython.noop),
        migrations.RemoveField(
            model_name='tenant',
            name='crm_webhook_secret',
        ),
        migrations.AlterField(
            model_name='tenant',
            name='crm_webhook_url',
            field=models.URLField(blank=True, help_text="Where pool C posts this tenant's leads (https, a public address, or a host in LEADFLOW_OUTBOUND_ALLOWED_HOSTS); empty = local CRM adapter.", validators=[apps.tenants.models.crm_webhook_url_validate]),
        ),
    ]
