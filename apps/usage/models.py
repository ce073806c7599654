"""The receipt's rows: one per tenant and UTC hour, written by the control process
(apps/usage/receipt.py `receipts_flush`), rewritten while the hour is open, kept after."""

from django.db import models


class HourlyReceipt(models.Model):
    """What one tenant's leads met in one hour: the intake's answers, then the pipeline's."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE)
    hour = models.DateTimeField(help_text="The hour's start, UTC.")
    # The intake's answers, per lead (admit.lua counts them in Redis).
    accepted = models.PositiveIntegerField(default=0, help_text="Accepted, demoted included.")
    demoted = models.PositiveIntegerField(
        default=0, help_text="Sent as critical, accepted as normal (no critical credit left)."
    )
    duplicates = models.PositiveIntegerField(default=0, help_text="Answered with the original.")
    refused_ip_rate = models.PositiveIntegerField(default=0)
    refused_tenant_rate = models.PositiveIntegerField(default=0)
    refused_hourly_budget = models.PositiveIntegerField(default=0)
    refused_backpressure = models.PositiveIntegerField(default=0)
    # The pipeline's records of the hour (PostgreSQL's own rows, counted at flush time).
    sampled = models.PositiveIntegerField(
        default=0, help_text="Leads sampled out in SEVERE: their CRM sync waits in the ledger."
    )
    deferred = models.PositiveIntegerField(
        default=0, help_text="Other work put in the deferred ledger (shed, paused, degraded)."
    )
    backfilled = models.PositiveIntegerField(
        default=0, help_text="Deferred work done (closed in the ledger) in this hour."
    )
    quarantined = models.PositiveIntegerField(
        default=0, help_text="Leads that failed a stage for a reason of their own."
    )
    dead_lettered = models.PositiveIntegerField(default=0, help_text="Leads the CRM gave up on.")
    synced = models.PositiveIntegerField(default=0, help_text="Leads the CRM accepted.")
    synced_p50_seconds = models.FloatField(
        null=True, blank=True, help_text="Median time from received to synced, of those."
    )
    synced_p99_seconds = models.FloatField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-hour", "tenant_id"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "hour"], name="receipt_tenant_hour_uniq")
        ]
        indexes = [models.Index(fields=["hour"], name="receipt_hour_idx")]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.hour:%Y-%m-%d %H:00}"
