# API keys as users expect them: an optional expiry, and when each was last used.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('tenants', '0003_webhook_secrets'),
    ]

    operations = [
        migrations.AddField(
            model_name='apikey',
            name='expires_at',
            field=models.DateTimeField(blank=True, help_text='Refused from this moment on (401 naming the expiry); empty = never.', null=True),
        ),
        migrations.AddField(
            model_name='apikey',
            name='last_used_at',
            field=models.DateTimeField(blank=True, help_text='Last request with this key, to within a minute or two.', null=True),
        ),
    ]
