"""Pool B's writes: enrich qualified leads by their e-mail domain, degrading to local rules.

Per domain, in order: free-mail or unreadable domains take the local rules; then the Redis
cache of earlier AI answers; then the configured provider through breaker("ai"). When that
provider fails, is slow or its breaker is open, the local rules stand in and the lead is
flagged ai_degraded so it can be enriched again once the provider is back (an event recorded by
its breaker: apps/control/backfill.py), through leads_enrich_deferred.
"""

import json
import logging
import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

import pybreaker
import redis
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.control.ledger import leads_defer, leads_deferral_close
from apps.control.models import DeferredKind, DeferredReason
from apps.control.state import shedding_current
from apps.enrichment.models import EnrichmentProvider, LeadEnrichment
from apps.enrichment.providers import (
    FREE_MAIL_DOMAINS,
    PROFILE_FIELDS,
    Provider,
    ProviderError,
    domain_profile_local,
    provider_from_settings,
)
from apps.leads.models import Lead, LeadStage, LeadStatus
from apps.leads.normalization import email_domain
from apps.leads.quarantine import leads_quarantine
from leadflow.breakers import breaker
from leadflow.outbound import DEPENDENCY_DOWN_ERRORS, Deadline, text_storable
from leadflow.redis_conn import get_redis
from leadflow.redis_keys import ENRICH_DOMAIN_CACHE_PREFIX

logger = logging.getLogger(__name__)

CACHE_TTL_SECONDS = 7 * 24 * 3600
_LEADS = connection.ops.quote_name(Lead._meta.db_table)
_ENRICHMENTS = connection.ops.quote_name(LeadEnrichment._meta.db_table)
# A batch's enrichments and leads in one statement: each domain's row of the profile arrays
# joined to its leads by index; a redo (a shed or degraded enrichment, backfilled) replaces the
# earlier answer; a lead whose enrichment was shed may be synced already: it keeps its status.
_ENRICHMENTS_WRITE = f"""
WITH profile AS (
    SELECT * FROM unnest(
        %(domains)s::text[], %(providers)s::text[], %(profiles)s::jsonb[], %(degraded)s::bool[]
    ) WITH ORDINALITY AS profile (domain, provider, profile, degraded, number)
), batch AS (
    SELECT batch.trace_id, profile.domain, profile.provider, profile.profile, profile.degraded
    FROM unnest(%(trace_ids)s::uuid[], %(domain_index)s::int[]) AS batch (trace_id, number)
    JOIN profile USING (number)
), enrichment AS (
    INSERT INTO {_ENRICHMENTS} (lead_id, provider, data, degraded, created_at)
    SELECT trace_id, provider, jsonb_build_object('domain', domain) || profile, degraded, %(now)s
    FROM batch
    ON CONFLICT (lead_id) DO UPDATE
    SET provider = EXCLUDED.provider, data = EXCLUDED.data, degraded = EXCLUDED.degraded
)
UPDATE {_LEADS} AS lead
SET status = CASE WHEN lead.status = %(qualified)s THEN %(enriched)s ELSE lead.status END,
    enriched_at = %(now)s, ai_degraded = batch.degraded, updated_at = %(now)s
FROM batch WHERE lead.trace_id = batch.trace_id
"""
# What a probe asks the provider about (ai_provider_probe): any company domain would do.
AI_PROBE_DOMAIN = "example.org"


@dataclass(frozen=True)
class DomainOutcome:
    provider: str  # an EnrichmentProvider value
    profile: dict
    degraded: bool


@dataclass
class EnrichOutcome:
    enriched: list[str] = field(default_factory=list)  # for the CRM, in input order
    # Not done before the task's deadline (their domains were not asked): sent again.
    later: list[str] = field(default_factory=list)


def enrich_outcome_defer_if_paused(outcome: EnrichOutcome, tier: str) -> bool:
    """A paused tier's queues receive nothing: the leads a run leaves for later wait in the
    deferred ledger for enrichment, and every lead of the run for its CRM sync, as pool A's
    routing does (apps/control/routing.py); sent when the tier resumes. True if so."""
    shedding = shedding_current()
    if tier not in shedding.paused_tiers:
        return False
    mode, paused = shedding.mode, DeferredReason.PAUSED
    leads_defer(DeferredKind.ENRICHMENT, outcome.later, mode, paused)
    leads_defer(DeferredKind.CRM_SYNC, outcome.later + outcome.enriched, mode, paused)
    return True


def leads_enrich(trace_ids: list[str], deadline: Deadline | None = None) -> EnrichOutcome:
    """Enrich the qualified leads among trace_ids; say which are now enriched, in input order.

    Idempotent: leads already enriched are not touched again but are returned, so a
    redelivered batch still reaches pool C; leads in any other status are skipped. A lead that
    fails for a reason of its own is quarantined; its batch-mates go on.
    """
    ids = _trace_ids_parse(trace_ids)
    if not ids:
        return EnrichOutcome()
    found = _leads_read(ids)
    # Only leads that passed scoring are enriched; the rest go to the CRM as they are.
    email_of = {
        trace_id: email
        for trace_id, (email, status, qualified) in found.items()
        if status == LeadStatus.QUALIFIED and qualified
    }
    written = _Written()
    later = _enrich(email_of, deadline, written)
    enriched = written.enriched | {
        trace_id for trace_id, (_, status, _) in found.items() if status == LeadStatus.ENRICHED
    }
    if written.missed:
        # Changed between the read and the write's lock (another delivery enriched them, say):
        # read again, as they are now.
        enriched |= {
            trace_id
            for trace_id, (_, status, _) in _leads_read(sorted(written.missed)).items()
            if status == LeadStatus.ENRICHED
        }
    return EnrichOutcome(
        enriched=[str(trace_id) for trace_id in ids if trace_id in enriched],
        later=[str(trace_id) for trace_id in later],
    )


def _leads_read(ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[str, str, bool | None]]:
    """{trace id: (email, status, is_qualified)} of the stored leads among ids, in one
    statement: a primary-key probe per id whatever the planner thinks of the table's size
    (apps/leads/services.py explains why)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT lead.trace_id, lead.email, lead.status, lead.is_qualified"
            f" FROM unnest(%s::uuid[]) AS batch (trace_id) CROSS JOIN LATERAL ("
            f"  SELECT trace_id, email, status, is_qualified FROM {_LEADS}"
            f"  WHERE trace_id = batch.trace_id LIMIT 1) AS lead",
            [_array_literal(ids)],
        )
        return {row[0]: row[1:] for row in cursor}


def leads_enrich_deferred(trace_ids: list[str], deadline: Deadline | None = None) -> EnrichOutcome:
    """Backfill: enrich the leads among trace_ids whose enrichment was shed under overload,
    or done by the local rules while the AI provider failed.

    Returns, for the CRM, the leads this run enriched whose delivery changes: those already
    synced get a second delivery that carries the enrichment (receivers upsert by trace id),
    the others their first. A lead another run of the same work enriched first is left to that
    run, and a degraded lead degraded again has nothing new for its CRM: neither is returned,
    so each redo reaches the CRM once, and a redo while the provider is still down not at all.
    """
    ids = _trace_ids_parse(trace_ids)
    leads = Lead.objects.filter(trace_id__in=ids, enrichment_deferred=True)
    email_of = dict(leads.values_list("trace_id", "email"))
    written = _Written()
    later = _enrich(email_of, deadline, written)
    return EnrichOutcome(
        enriched=[str(trace_id) for trace_id in ids if trace_id in written.news],
        later=[str(trace_id) for trace_id in later],
    )


@dataclass
class _Written:
    """What writing a run's enrichments did, added up over the parts a failure splits it in."""

    # Written, less those degraded before and degraded again: their CRM copy changes.
    news: set[uuid.UUID] = field(default_factory=set)
    enriched: set[uuid.UUID] = field(default_factory=set)  # status enriched after the write
    # Not waiting any more once locked (enriched or quarantined meanwhile): not written.
    missed: set[uuid.UUID] = field(default_factory=set)


def _enrich(
    email_of: dict[uuid.UUID, str], deadline: Deadline | None, written: _Written
) -> list[uuid.UUID]:
    """Enrich these leads and write it (adding to `written`); returns the leads whose domain
    was not asked in time."""
    if not email_of:
        return []
    domain_of = {trace_id: email_domain(email) for trace_id, email in email_of.items()}
    deadline = deadline or Deadline(settings.AI_TASK_DEADLINE_SECONDS)
    outcomes = domains_enrich(set(domain_of.values()), deadline)
    ready = {t: d for t, d in domain_of.items() if d in outcomes}
    _enrichments_write_isolated(sorted(ready), ready, outcomes, written)
    return [trace_id for trace_id, domain in domain_of.items() if domain not in outcomes]


def ai_provider_probe() -> str:
    """Try the AI provider through its breaker, so that its return is seen even when no fresh
    lead needs it (the control process asks for a probe while degraded enrichments wait for
    it: apps/control/backfill.py): one call, and while half-open, calls until the breaker
    closes. Refused at once while the breaker's reset timeout runs; stops at the first
    failure. Returns the breaker's state."""
    ai = breaker("ai")
    provider = provider_from_settings()
    if provider.name == EnrichmentProvider.LOCAL:
        return ai.current_state
    for _ in range(settings.BREAKER_SUCCESS_THRESHOLD):
        try:
            with ai.calling():
                provider.enrich_domains([AI_PROBE_DOMAIN])
        except (ProviderError, pybreaker.CircuitBreakerError):
            break
        if ai.current_state == pybreaker.STATE_CLOSED:
            break
    return ai.current_state


def domains_enrich(
    domains: Iterable[str], deadline: Deadline | None = None
) -> dict[str, DomainOutcome]:
    """A profile for every domain, and where it came from; never raises for provider trouble.
    A domain left out was not asked before the deadline (no call fitted any more)."""
    outcomes: dict[str, DomainOutcome] = {}
    askable = []
    for domain in domains:
        if domain in FREE_MAIL_DOMAINS or "." not in domain:
            # A free-mail domain says nothing about the lead's company: the AI would profile
            # Google for every gmail.com lead. The local rules are the right answer here.
            outcomes[domain] = _local(domain, degraded=False)
        else:
            askable.append(domain)
    if not askable:
        return outcomes

    for domain, profile in domain_profiles_cached(askable).items():
        outcomes[domain] = DomainOutcome(EnrichmentProvider.CACHE, profile, degraded=False)
    missing = sorted(d for d in askable if d not in outcomes)
    if not missing:
        return outcomes

    provider = provider_from_settings()
    if provider.name == EnrichmentProvider.LOCAL:  # chosen by configuration: not degraded
        outcomes.update({domain: _local(domain, degraded=False) for domain in missing})
        return outcomes

    deadline = deadline or Deadline(settings.AI_TASK_DEADLINE_SECONDS)
    answered, unasked = _provider_ask(provider, missing, deadline)
    _domain_profiles_cache(answered)
    for domain, profile in answered.items():
        outcomes[domain] = DomainOutcome(EnrichmentProvider.HTTP, profile, degraded=False)
    failed = [domain for domain in missing if domain not in answered and domain not in unasked]
    if failed:
        # Another worker may have cached some of them while this one waited on the provider.
        late = domain_profiles_cached(failed)
        for domain in failed:
            if domain in late:
                outcomes[domain] = DomainOutcome(EnrichmentProvider.CACHE, late[domain], False)
            else:
                outcomes[domain] = _local(domain, degraded=True)
    return outcomes


def domain_profiles_cached(domains: list[str]) -> dict[str, dict]:
    """Earlier AI answers for these domains (one MGET); a Redis failure reads as no answers."""
    if not domains:
        return {}
    try:
        raw_values = get_redis().mget([ENRICH_DOMAIN_CACHE_PREFIX + domain for domain in domains])
    except redis.RedisError as error:
        logger.warning("enrichment cache unreadable, asking the provider instead: %r", error)
        return {}
    found = {}
    for domain, raw in zip(domains, raw_values, strict=True):
        profile = _profile_decode(raw)
        if profile is not None:
            found[domain] = profile
    return found


def _profile_decode(raw: bytes | None) -> dict | None:
    if raw is None:
        return None
    try:
        profile = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(profile, dict) or not all(
        isinstance(profile.get(field), str) for field in PROFILE_FIELDS
    ):
        return None
    return {field: profile[field] for field in PROFILE_FIELDS}


def _domain_profiles_cache(profiles: dict[str, dict]) -> None:
    if not profiles:
        return
    try:
        with get_redis().pipeline(transaction=False) as pipe:
            for domain, profile in profiles.items():
                pipe.set(
                    ENRICH_DOMAIN_CACHE_PREFIX + domain, json.dumps(profile), ex=CACHE_TTL_SECONDS
                )
            pipe.execute()
    except redis.RedisError as error:
        # The answers are still used for this batch; only later batches lose the shortcut.
        logger.warning("enrichment cache not written: %r", error)


def _provider_ask(
    provider: Provider, domains: list[str], deadline: Deadline
) -> tuple[dict[str, dict], set[str]]:
    """The provider's answers, one breaker call per request, and the domains not asked because
    no call fitted before the deadline any more. A failed request's domains are left out; so
    is a domain the reply left out or gave a bad profile for, without counting as a failure."""
    ai = breaker("ai")
    answered: dict[str, dict] = {}
    failures: list[str] = []
    size = provider.max_domains_per_call
    for start in range(0, len(domains), size):
        if not deadline.allows(provider.timeout_seconds):
            unasked = set(domains[start:])
            logger.info("AI: %d domains left for a later run (task deadline)", len(unasked))
            break
        chunk = domains[start : start + size]
        try:
            # An open breaker raises at once, so a dead provider costs nothing after fail_max.
            # calling() rather than call(): call() holds the breaker's lock for the whole
            # request, which would let only one thread of pool B talk to the provider.
            with ai.calling():
                profiles = provider.enrich_domains(chunk)
        except (ProviderError, pybreaker.CircuitBreakerError) as error:
            failures.append(str(error))
            continue
        answered.update({domain: profiles[domain] for domain in chunk if domain in profiles})
        left_out = [domain for domain in chunk if domain not in profiles]
        if left_out:
            logger.warning(
                "AI provider gave no usable profile for %d of %d domains (local rules stand "
                "in for those alone), e.g. %r",
                len(left_out),
                len(chunk),
                left_out[0],
            )
    else:
        unasked = set()
    if failures:
        logger.warning(
            "AI provider failed %d of %d requests, local rules stand in (breaker %s): %s",
            len(failures),
            math.ceil(len(domains) / size),
            ai.current_state,
            failures[-1],
        )
    return answered, unasked


def _local(domain: str, degraded: bool) -> DomainOutcome:
    return DomainOutcome(EnrichmentProvider.LOCAL, domain_profile_local(domain), degraded)


def _enrichments_write_isolated(
    trace_ids: list[uuid.UUID],
    domain_of: dict[uuid.UUID, str],
    outcomes: dict[str, DomainOutcome],
    written: _Written,
) -> None:
    """Write the enrichments; a lead whose write fails for a reason of its own (PostgreSQL
    refuses its data, a bug) is found by halving the batch and quarantined alone."""
    if not trace_ids:
        return
    try:
        _enrichments_write({t: domain_of[t] for t in trace_ids}, outcomes, written)
        return
    except DEPENDENCY_DOWN_ERRORS:
        raise  # not the leads': the task retries the batch
    except Exception as error:
        if len(trace_ids) == 1:
            code = type(error).__name__[:40]
            reason = text_storable(f"enrichment not written: {code}: {error}", 2000)
            leads_quarantine([str(trace_ids[0])], LeadStage.ENRICHMENT, reason, code, error)
            return
    half = len(trace_ids) // 2
    _enrichments_write_isolated(trace_ids[:half], domain_of, outcomes, written)
    _enrichments_write_isolated(trace_ids[half:], domain_of, outcomes, written)


def _enrichments_write(
    domain_of: dict[uuid.UUID, str], outcomes: dict[str, DomainOutcome], written: _Written
) -> None:
    """Write the enrichments of the leads still waiting for one (qualified, or with their
    enrichment shed or degraded); a lead enriched meanwhile by another delivery is skipped.

    Set-based: one statement locks and reads the leads, one writes every enrichment and lead
    (an INSERT ... ON CONFLICT and an UPDATE ... FROM of the batch's arrays); the deferred
    ledger is touched only for leads that have something there (their flag, read under the
    lock) or are degraded now.
    """
    now = timezone.now()
    with transaction.atomic(), connection.cursor() as cursor:
        # Locked in key order (the ids come sorted), so two deliveries of overlapping batches
        # cannot deadlock; the second one waits, then finds the leads enriched and writes
        # nothing. The row a lock waited for is read as it is now, the flag included.
        cursor.execute(
            f"SELECT lead.trace_id, lead.status, lead.enrichment_deferred, lead.degraded"
            f" FROM unnest(%s::uuid[]) AS batch (trace_id) CROSS JOIN LATERAL ("
            f"  SELECT trace_id, status, enrichment_deferred,"
            # Only a redo has an earlier enrichment to look at.
            f"   CASE WHEN enrichment_deferred THEN"
            f"    (SELECT degraded FROM {_ENRICHMENTS} WHERE lead_id = trace_id) END AS degraded"
            f"  FROM {_LEADS} WHERE trace_id = batch.trace_id"
            f"  AND (status = %s OR enrichment_deferred) LIMIT 1 FOR UPDATE) AS lead",
            [_array_literal(sorted(domain_of)), LeadStatus.QUALIFIED.value],
        )
        waiting = cursor.fetchall()
        locked = [trace_id for trace_id, _, _, _ in waiting]
        written.missed.update(set(domain_of) - set(locked))
        if not waiting:
            return
        # Profiles go once per domain, leads as (trace id, domain's index): a batch shares few.
        domains = sorted({domain_of[trace_id] for trace_id in locked})
        index = {domain: number for number, domain in enumerate(domains, start=1)}
        cursor.execute(
            _ENRICHMENTS_WRITE,
            {
                "domains": domains,
                "providers": [outcomes[d].provider for d in domains],
                "profiles": [json.dumps(outcomes[d].profile) for d in domains],
                "degraded": [outcomes[d].degraded for d in domains],
                "trace_ids": _array_literal(locked),
                "domain_index": _array_literal(index[domain_of[trace_id]] for trace_id in locked),
                "now": now,
                "qualified": LeadStatus.QUALIFIED.value,
                "enriched": LeadStatus.ENRICHED.value,
            },
        )
        degraded_now = [t for t in locked if outcomes[domain_of[t]].degraded]
        flagged = [trace_id for trace_id, _, deferred, _ in waiting if deferred]
        if flagged:
            leads_deferral_close(DeferredKind.ENRICHMENT, flagged)
        if degraded_now:
            # Degraded answers wait in the ledger for the provider to be back: sent at its next
            # recovery, an event its breaker records (apps/control/backfill.py), not on a timer.
            leads_defer(
                DeferredKind.ENRICHMENT,
                degraded_now,
                shedding_current().mode,
                reason=DeferredReason.AI_DEGRADED,
            )
    degraded_before = {trace_id for trace_id, _, _, degraded in waiting if degraded}
    written.news.update(set(locked) - (degraded_before & set(degraded_now)))
    # A lead whose enrichment was shed may be synced already: it keeps its status.
    written.enriched.update(
        trace_id
        for trace_id, status, _, _ in waiting
        if status in (LeadStatus.QUALIFIED, LeadStatus.ENRICHED)
    )


def _array_literal(values: Iterable) -> str:
    """A PostgreSQL array literal of UUIDs or numbers (nothing to quote): one parameter, where
    psycopg would adapt a list's elements one by one."""
    return "{" + ",".join(map(str, values)) + "}"


def _trace_ids_parse(trace_ids: list[str]) -> list[uuid.UUID]:
    """Unique ids in input order; a value that is not a UUID cannot name a lead and is dropped."""
    seen: dict[uuid.UUID, None] = {}
    for raw in trace_ids:
        try:
            seen.setdefault(raw if isinstance(raw, uuid.UUID) else uuid.UUID(str(raw)), None)
        except ValueError:
            logger.warning("pool B got a trace id that is not a UUID: %r", raw)
    return list(seen)
