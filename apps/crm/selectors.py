"""Pool C's reads: which leads the CRM stage may deliver."""

from django.db.models import Q

from apps.leads.models import LeadStatus

# Ready for the CRM: enriched; or scored under the threshold (those skip enrichment); or
# qualified with its enrichment shed under overload (it comes later, in a second delivery); or
# dead-lettered (a replay). A qualified lead that passed is still waiting for enrichment.
CRM_READY = (
    Q(status=LeadStatus.ENRICHED)
    | Q(status=LeadStatus.QUALIFIED, is_qualified=False)
    | Q(status=LeadStatus.QUALIFIED, enrichment_deferred=True)
    | Q(status=LeadStatus.DEAD_LETTERED)
)
