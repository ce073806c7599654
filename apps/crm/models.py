"""Pool C's records: what reached the CRM (CrmSync) and what gave up on the way (DeadLetter)."""

from django.db import models
from django.db.models import Q


class CrmAdapterName(models.TextChoices):
    WEBHOOK = "webhook"
    LOCAL = "local"


class CrmSync(models.Model):
    """One row per lead the CRM accepted; its existence is the proof of delivery."""

    lead = models.OneToOneField(
        "leads.Lead", primary_key=True, related_name="crm_sync", on_delete=models.CASCADE
    )
    adapter = models.CharField(max_length=16, choices=CrmAdapterName.choices)
    response = models.JSONField(default=dict, blank=True, help_text="What the CRM answered.")
    synced_at = models.DateTimeField()

    class Meta:
        verbose_name = "CRM sync"

    def __str__(self) -> str:
        return f"{self.lead_id} via {self.adapter}"


class DeadLetterStage(models.TextChoices):
    CRM = "crm", "CRM sync"


class DeadLetter(models.Model):
    """A lead whose stage gave up after its retries; a replayed one keeps its row (replayed_at)."""

    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="dead_letters"
    )
    lead = models.ForeignKey("leads.Lead", on_delete=models.CASCADE, related_name="dead_letters")
    stage = models.CharField(max_length=16, choices=DeadLetterStage.choices)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    replayed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # At most one open dead letter per lead and stage, enforced by PostgreSQL so a
            # redelivered failure (acks_late) cannot add a second one, even in a race.
            models.UniqueConstraint(
                fields=["lead", "stage"],
                condition=Q(replayed_at__isnull=True),
                name="deadletter_one_open_per_lead_stage",
            ),
        ]
        indexes = [
            # The admin's list and the per-tenant accounting: a tenant's dead letters by age.
            models.Index(fields=["tenant", "created_at"], name="deadletter_tenant_idx"),
        ]

    def __str__(self) -> str:
        state = "replayed" if self.replayed_at else "open"
        return f"{self.lead_id} at {self.stage} ({state})"

    @property
    def is_open(self) -> bool:
        return self.replayed_at is None
