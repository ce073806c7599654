"""Leads as pool A writes them; later stages add their results in their own apps' tables."""

from django.db import models

from leadflow.queues import Tier  # noqa: F401 - the pipeline's tiers, defined once, there


class LeadStatus(models.TextChoices):
    # "queued" is not stored: a queued lead lives in a Redis inbox, not yet in PostgreSQL.
    QUEUED = "queued"
    QUALIFIED = "qualified"  # pool A scored it (is_qualified says whether it passed)
    ENRICHED = "enriched"  # pool B added its enrichment
    SYNCED = "synced"  # pool C delivered it to the CRM
    DUPLICATE = "duplicate"  # same tenant and email within 24 h: not processed again
    FAILED = "failed"  # a stage failed for a reason of the lead's own (quarantined; replayable)
    DEAD_LETTERED = "dead_lettered"  # CRM delivery gave up after its retries


class LeadStage(models.TextChoices):
    """The stages a lead goes through, for a quarantined lead's `failed_stage`."""

    QUALIFICATION = "qualification"  # pool A
    ENRICHMENT = "enrichment"  # pool B
    CRM = "crm"  # pool C


class Lead(models.Model):
    # The intake's trace id is the primary key: every stage is idempotent by it.
    trace_id = models.UUIDField(primary_key=True)
    # No index of its own: lead_dedup_idx leads with the tenant, and every index more is one
    # more entry written each time a stage moves the lead's status (no update is HOT).
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="leads", db_index=False
    )
    tier = models.CharField(max_length=8, choices=Tier.choices)
    status = models.CharField(max_length=16, choices=LeadStatus.choices)

    email = models.CharField(max_length=254, help_text="Normalized: trimmed, lower-case.")
    name = models.CharField(max_length=200, blank=True)
    phone = models.CharField(max_length=40, blank=True, help_text="E.164 where it parsed.")
    company = models.CharField(max_length=200, blank=True)
    source = models.CharField(max_length=100, blank=True)
    campaign_id = models.CharField(max_length=100, blank=True)
    region = models.CharField(max_length=50, blank=True)
    payload = models.JSONField(default=dict, blank=True)

    score = models.IntegerField(null=True)
    is_qualified = models.BooleanField(null=True)
    score_reasons = models.JSONField(default=list, blank=True)
    duplicate_of = models.UUIDField(null=True, blank=True)
    ai_degraded = models.BooleanField(default=False)
    demoted = models.BooleanField(
        default=False, help_text="Sent as critical without a critical credit: runs as normal."
    )
    # Work shed under overload (see apps.control.models.DeferredWork, the ledger that says why
    # and when it is done). The flags keep the sweeper and pool A's fan-out from resending it.
    enrichment_deferred = models.BooleanField(default=False)
    sync_deferred = models.BooleanField(default=False)

    # Quarantine (apps/leads/quarantine.py): a stage that failed for a reason of this lead's own
    # (not a dependency's) leaves it `failed` here, alone, so its batch-mates go on.
    failed_stage = models.CharField(max_length=16, choices=LeadStage.choices, blank=True)
    failed_reason = models.TextField(blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    # Pool A's failures only: the inbox entry as it came (ASCII JSON), to replay it after a fix;
    # the row's own fields then hold what could be stored of it.
    failed_entry = models.TextField(blank=True)

    received_at = models.DateTimeField()
    qualified_at = models.DateTimeField(null=True)
    enriched_at = models.DateTimeField(null=True)
    synced_at = models.DateTimeField(null=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Retention (apps/retention): when the personal data and payload were cleared.
    anonymized_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # Semantic dedup: same tenant, same normalized email, recent.
            models.Index(fields=["tenant", "email", "received_at"], name="lead_dedup_idx"),
            # The quarantine's admin list and metrics: few rows, by stage and time.
            models.Index(
                fields=["failed_stage", "failed_at"],
                condition=models.Q(status="failed"),
                name="lead_failed_idx",
            ),
            # The stalled-lead sweeper reads only leads between pool A and the CRM: few rows.
            models.Index(
                fields=["qualified_at"],
                condition=models.Q(status__in=["qualified", "enriched"]),
                name="lead_in_flight_idx",
            ),
            # The retention job's leads: final, not yet anonymized, oldest change first.
            models.Index(
                fields=["updated_at"],
                condition=models.Q(
                    status__in=["synced", "failed", "duplicate", "dead_lettered"],
                    anonymized_at__isnull=True,
                ),
                name="lead_retention_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.trace_id} {self.email} ({self.status})"


class FailedLeadManager(models.Manager):
    def get_queryset(self):
        return super().get_queryset().filter(status=LeadStatus.FAILED)


class FailedLead(Lead):
    """The quarantine, as operators see it in the admin: leads whose stage failed for a reason
    of their own, to read and replay (the rows are the leads' own, in status failed)."""

    objects = FailedLeadManager()

    class Meta:
        proxy = True
        verbose_name = "failed lead (quarantine)"
        verbose_name_plural = "failed leads (quarantine)"
