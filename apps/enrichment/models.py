"""Pool B's result: one enrichment per lead, and where it came from."""

from django.db import models


class EnrichmentProvider(models.TextChoices):
    HTTP = "http", "AI provider"  # it answered for this batch
    CACHE = "cache", "AI provider, cached"  # an earlier answer for the same domain (7 days)
    LOCAL = "local", "Local rules"  # in-process rules on the domain name


class LeadEnrichment(models.Model):
    # The lead is the key: a redelivered batch cannot write a second enrichment.
    lead = models.OneToOneField(
        "leads.Lead", primary_key=True, on_delete=models.CASCADE, related_name="enrichment"
    )
    provider = models.CharField(max_length=8, choices=EnrichmentProvider.choices)
    data = models.JSONField(
        default=dict, help_text="domain, industry, company_size, summary as the provider gave them."
    )
    degraded = models.BooleanField(
        default=False, help_text="The AI provider was configured but failed; local rules stood in."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.lead_id} via {self.provider}{' (degraded)' if self.degraded else ''}"
