"""Per-tenant reports and analytics, one per period; built by pool C at LOW priority."""

from django.db import models


class ReportKind(models.TextChoices):
    REPORT = "report"  # leads by tier and status, qualification rate, mean score
    ANALYTICS = "analytics"  # leads and mean score by source and campaign


class Report(models.Model):
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE)
    kind = models.CharField(max_length=10, choices=ReportKind.choices)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    data = models.JSONField(default=dict)
    built_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "kind", "period_start"], name="report_period_uniq"
            )
        ]
        ordering = ["-period_start", "tenant_id", "kind"]

    def __str__(self) -> str:
        return f"{self.kind} of {self.tenant_id} for {self.period_start:%Y-%m-%d %H:%M}"
