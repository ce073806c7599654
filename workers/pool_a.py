"""Pool A: qualification (prefork: the work is CPU — parsing, normalizing, scoring)."""

from apps.control.routing import leads_route
from apps.control.state import shedding_current
from apps.inbox import entries_decode, release_batch
from apps.leads.services import leads_qualify
from leadflow import handoff
from leadflow.celery import app
from leadflow.outbound import DEPENDENCY_DOWN_ERRORS


@app.task(
    name="pool_a.qualify_leads",
    # A dependency down or full (not a lead's fault): retried until it is back. Leads that fail
    # for a reason of their own are quarantined inside leads_qualify instead.
    autoretry_for=DEPENDENCY_DOWN_ERRORS,
    max_retries=None,  # an outage is waited out; the in-flight copy is the safety net
    retry_backoff=1,
    retry_backoff_max=30,
    retry_jitter=True,
)
def qualify_leads(entries: list[str], tier: str, batch_id: str | None = None) -> None:
    """Store and score a batch from an inbox, then pass it on: qualified → B, the rest → C,
    except what overload sheds (written to the deferred ledger).

    Only then is the dispatcher's in-flight copy released; until that, a lost message is
    republished by the control process (storing is idempotent by trace id).
    """
    outcome = leads_qualify(entries_decode(entries))
    route = leads_route(outcome.to_enrich, outcome.to_sync, tier, shedding_current())
    if route.to_enrich:
        handoff.send_to_enrich(route.to_enrich, tier)
    if route.to_sync:
        handoff.send_to_sync(route.to_sync, tier)
    if batch_id:
        release_batch(batch_id)
