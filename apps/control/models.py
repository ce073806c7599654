"""Overload control's records: the operators' policy, the audit of every decision, and the
deferred ledger of work shed under overload (done later, never dropped)."""

from django.core.validators import MaxValueValidator
from django.db import models
from django.utils import timezone


class Mode(models.TextChoices):
    NORMAL = "normal"
    THIN = "thin"  # enrichment (non-critical) and reports off, LOW paused
    SEVERE = "severe"  # THIN, and only a sample of non-critical leads go on past qualification
    EMERGENCY = "emergency"  # critical leads lag: shed features in order, one per dwell


class Policy(models.Model):
    """The operators' overrides (one row). Each wins over the controller until cleared."""

    forced_mode = models.CharField(
        max_length=10,
        choices=Mode.choices,
        blank=True,
        help_text="Empty: the controller decides from the measured lag.",
    )
    pause_low = models.BooleanField(default=False, help_text="Pause LOW work in every mode.")
    sampling_percent = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MaxValueValidator(100)],
        help_text="Share of non-critical leads that go on past qualification in SEVERE. "
        "Empty: the default (LEADFLOW_SEVERE_SAMPLING_PERCENT).",
    )
    throttle_crm = models.BooleanField(default=False, help_text="Throttle CRM sync.")
    pause_enrichment = models.BooleanField(default=False, help_text="Pause AI enrichment.")
    reports_off = models.BooleanField(default=False, help_text="Turn reporting off.")
    analytics_off = models.BooleanField(default=False, help_text="Turn analytics off.")
    stop_scaling = models.BooleanField(
        default=False,
        help_text="Emergency stop: freeze the backlog figures autoscalers read (KEDA), so the "
        "pools keep their current size.",
    )
    updated_by = models.CharField(max_length=150, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "overload policy"
        verbose_name_plural = "overload policy"

    def __str__(self) -> str:
        return "Overload policy"

    @classmethod
    def current(cls) -> "Policy":
        return cls.objects.get_or_create(pk=1)[0]


class ControlEvent(models.Model):
    """Audit: a mode transition with the measures that caused it, or an operator's override."""

    class Kind(models.TextChoices):
        TRANSITION = "transition"
        SHED = "shed"  # EMERGENCY shed one more feature
        OVERRIDE = "override"  # an operator changed the policy

    # When it happened: an event recorded while PostgreSQL was away is written later, with it.
    at = models.DateTimeField(default=timezone.now, db_index=True, editable=False)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    from_mode = models.CharField(max_length=10, choices=Mode.choices, blank=True)
    to_mode = models.CharField(max_length=10, choices=Mode.choices, blank=True)
    actor = models.CharField(max_length=150, help_text="'controller' or the admin user.")
    reason = models.TextField()
    measures = models.JSONField(default=dict, help_text="Per tier: backlog, lag, drain rate.")

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.kind} {self.from_mode}→{self.to_mode}"


class DeferredKind(models.TextChoices):
    ENRICHMENT = "enrichment"  # a lead's AI enrichment
    CRM_SYNC = "crm_sync"  # a lead's CRM delivery (sampled out in SEVERE)
    REPORT = "report"  # a tenant's report for a period
    ANALYTICS = "analytics"  # a tenant's analytics for a period


class DeferredReason(models.TextChoices):
    SHED = "shed"  # overload control skipped it
    AI_DEGRADED = "ai_degraded"  # the AI provider failed, local rules stood in: redo once back
    PAUSED = "paused"  # bound for a paused tier's queues, which receive nothing: sent on resume


class DeferredWork(models.Model):
    """One piece of work skipped under overload, held for a paused tier, or done degraded;
    backfilled at LOW priority in NORMAL mode while LOW runs."""

    kind = models.CharField(max_length=12, choices=DeferredKind.choices)
    reason = models.CharField(
        max_length=12, choices=DeferredReason.choices, default=DeferredReason.SHED
    )
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE)
    lead = models.ForeignKey("leads.Lead", null=True, blank=True, on_delete=models.CASCADE)
    period_start = models.DateTimeField(null=True, blank=True, help_text="Reports: the period.")
    mode = models.CharField(max_length=10, choices=Mode.choices, help_text="Why: the mode then.")
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True, help_text="Last sent for backfill.")
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "deferred work"
        constraints = [
            # At most one open row per piece of work, so a redelivered batch cannot double it.
            models.UniqueConstraint(
                fields=["kind", "lead"],
                condition=models.Q(done_at__isnull=True, lead__isnull=False),
                name="deferred_open_lead_uniq",
            ),
            models.UniqueConstraint(
                fields=["kind", "tenant", "period_start"],
                condition=models.Q(done_at__isnull=True, period_start__isnull=False),
                name="deferred_open_period_uniq",
            ),
        ]
        indexes = [
            models.Index(
                fields=["created_at"],
                condition=models.Q(done_at__isnull=True),
                name="deferred_open_idx",
            ),
            # The receipt counts the ledger's rows by hour (apps/usage/receipt.py).
            models.Index(fields=["created_at"], name="deferred_created_idx"),
            models.Index(
                fields=["done_at"],
                condition=models.Q(done_at__isnull=False),
                name="deferred_done_idx",
            ),
        ]

    def __str__(self) -> str:
        subject = self.lead_id or f"{self.tenant_id} {self.period_start:%Y-%m-%d %H:%M}"
        return f"{self.kind} {subject} ({'done' if self.done_at else 'open'})"
