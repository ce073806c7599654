"""The audit of what retention and erasure removed: one row per retention run, one per erasure.

Neither row holds personal data: an erasure is recorded by a hash of the e-mail it was asked
for (the same address gives the same hash, so a repeat can be recognised), never the address.
"""

from django.db import models
from django.utils import timezone


class RetentionRun(models.Model):
    """One run of the retention job (apps/retention/retention.py) in the control process."""

    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField()
    leads = models.PositiveIntegerField(help_text="Leads anonymized in this run.")
    batches = models.PositiveIntegerField(help_text="Transactions of at most a batch each.")
    redis_keys = models.PositiveIntegerField(default=0, help_text="Redis keys deleted.")
    deferred_closed = models.PositiveIntegerField(
        default=0, help_text="Open deferred work of those leads closed (nothing left to redo)."
    )
    by_tenant = models.JSONField(default=dict, help_text="Tenant id -> leads anonymized.")
    complete = models.BooleanField(
        help_text="Caught up; unchecked: the run's time was up, the next run follows at once."
    )

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"retention {self.started_at:%Y-%m-%d %H:%M:%S}: {self.leads} leads"


class Erasure(models.Model):
    """One erasure request (the API's DELETE /api/v1/leads?email=…, or the admin's action)."""

    at = models.DateTimeField(default=timezone.now, db_index=True)
    # SET_NULL with the name kept: the audit outlives the tenant.
    tenant = models.ForeignKey("tenants.Tenant", null=True, on_delete=models.SET_NULL)
    tenant_name = models.CharField(max_length=100)
    email_sha256 = models.CharField(
        max_length=64, db_index=True, help_text="SHA-256 of the normalized e-mail, never it."
    )
    actor = models.CharField(max_length=150, help_text="'api key <prefix>' or 'admin <user>'.")
    leads = models.PositiveIntegerField(help_text="Lead rows deleted.")
    counts = models.JSONField(
        default=dict, help_text="Rows deleted per table, leads by status, Redis keys deleted."
    )

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"erasure {self.at:%Y-%m-%d %H:%M:%S} {self.tenant_name}: {self.leads} leads"
