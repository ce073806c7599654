"""The pipeline's settings: intake limits, the dispatcher, overload control (admission,
backpressure, modes, shedding), and pools B and C's outbound calls and deadlines."""

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from leadflow.env import env_bool, env_float, env_int, env_str
from leadflow.outbound_guard import OutboundPolicy, OutboundRefused, allowed_hosts_parse, url_check
from leadflow.settings.base import BASE_DIR, DEBUG

# Intake limits. A lead's payload is capped so one tenant cannot fill Redis with blobs.
LEAD_PAYLOAD_MAX_BYTES = env_int("LEADFLOW_PAYLOAD_MAX_BYTES", 16 * 1024)
BATCH_MAX_LEADS = 500
# Whole request bodies: one lead with a full payload; a batch of 500 typical leads with room
# for payloads (a batch of 500 maximal payloads must be split).
LEAD_BODY_MAX_BYTES = env_int("LEADFLOW_LEAD_BODY_MAX_BYTES", 64 * 1024)
BATCH_BODY_MAX_BYTES = env_int("LEADFLOW_BATCH_BODY_MAX_BYTES", 4 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = BATCH_BODY_MAX_BYTES
DEDUP_TTL_SECONDS = env_int("LEADFLOW_DEDUP_TTL_SECONDS", 24 * 3600)
# Retention (apps/retention, README "Retention"): the job runs every INTERVAL in the control
# process, anonymizing at most BATCH leads per transaction (short locks, SKIP LOCKED) ...
RETENTION_INTERVAL_SECONDS = env_float("LEADFLOW_RETENTION_INTERVAL_SECONDS", 300.0)
RETENTION_BATCH_SIZE = env_int("LEADFLOW_RETENTION_BATCH_SIZE", 500)
# ... for at most this long a run, so the control's database thread (policy, audit) is not held.
RETENTION_RUN_MAX_SECONDS = env_float("LEADFLOW_RETENTION_RUN_MAX_SECONDS", 2.0)
# The overload receipt (apps/usage/receipt.py, README "Receipt"): the control process writes the
# open hours to PostgreSQL this often; an hour stays open (rewritten) this many hours after it
# ends; GET /api/v1/usage answers at most this many days at a time.
RECEIPT_FLUSH_SECONDS = env_float("LEADFLOW_RECEIPT_FLUSH_SECONDS", 60.0)
# ... and its CRM deliveries (count, p50, p99: a join with the leads and a sort) this often; an
# hour's final count is taken when it ends, whatever this says.
RECEIPT_DELIVERIES_SECONDS = env_float("LEADFLOW_RECEIPT_DELIVERIES_SECONDS", 300.0)
RECEIPT_OPEN_HOURS = env_int("LEADFLOW_RECEIPT_OPEN_HOURS", 2)
USAGE_RANGE_MAX_DAYS = env_int("LEADFLOW_USAGE_RANGE_MAX_DAYS", 31)
# How long a tenant/API key stays in a process's cache without an invalidation message.
TENANT_CACHE_TTL_SECONDS = env_float("LEADFLOW_TENANT_CACHE_TTL_SECONDS", 30.0)
# While PostgreSQL is unreachable, a key loaded this recently is still served (README "Outages").
TENANT_CACHE_STALE_SECONDS = env_float("LEADFLOW_TENANT_CACHE_STALE_SECONDS", 3600.0)

# Dispatcher: leads move from inboxes to pool A in batches, and only while the
# pools' queues are shallow, so a critical lead never waits behind a deep queue.
DISPATCH_BATCH_MAX = env_int("LEADFLOW_DISPATCH_BATCH_MAX", 500)
DISPATCH_WATERMARK_A = env_int("LEADFLOW_DISPATCH_WATERMARK_A", 4)  # messages in a.*
DISPATCH_WATERMARK_BC = env_int("LEADFLOW_DISPATCH_WATERMARK_BC", 16)  # messages in b.* or c.*
# In NORMAL mode pool A runs ahead of B and C up to this many messages in b.* or c.* (each at
# most 500 leads: seconds of their work), apps/control/dispatcher.py says why.
DISPATCH_AHEAD_BC = env_int("LEADFLOW_DISPATCH_AHEAD_BC", 64)
# How often, at most, a tier sends a batch that is not full (apps/control/dispatcher.py says
# why): at a few hundred leads a second, a few batches of a hundred leads, not hundreds of one.
DISPATCH_LINGER_SECONDS = {
    "critical": env_float("LEADFLOW_DISPATCH_LINGER_CRITICAL", 0.25),
    "normal": env_float("LEADFLOW_DISPATCH_LINGER_NORMAL", 0.5),
    "low": env_float("LEADFLOW_DISPATCH_LINGER_LOW", 1.0),
}
# A batch handed to pool A and not stored within this long is published again (at-least-once:
# storing is idempotent). Above the task time limit, so a slow batch is not doubled needlessly.
INFLIGHT_REPUBLISH_SECONDS = env_float("LEADFLOW_INFLIGHT_REPUBLISH_SECONDS", 360.0)
# A stored lead still waiting for enrichment or CRM sync after this long is sent on again.
# Above the CRM's whole retry schedule, so a lead between retries is not doubled needlessly.
STALLED_LEAD_SECONDS = env_float("LEADFLOW_STALLED_LEAD_SECONDS", 900.0)
# A stored lead waiting this long for B or C that no message carries (none waiting in B's or
# C's queues, none held by a worker) lost its message (apps/control/sweeper.py): sent on again
# at the next sweep, without waiting for STALLED_LEAD_SECONDS.
ORPHAN_LEAD_SECONDS = env_float("LEADFLOW_ORPHAN_LEAD_SECONDS", 30.0)
# Drain rate assumed before the controller has measured one (leads/s per tier).
DRAIN_RATE_DEFAULT = env_float("LEADFLOW_DRAIN_RATE_DEFAULT", 1000.0)

# ---------------------------------------------------------------------------
# Overload control: admission limits, backpressure, the controller's modes, shedding.
# Every one can be set small for tests.
# ---------------------------------------------------------------------------
# Requests without a valid API key, per IP address (a token bucket): bots guessing keys.
ANONYMOUS_IP_RATE = env_float("LEADFLOW_ANONYMOUS_IP_RATE", 100.0)
ANONYMOUS_IP_BURST = env_int("LEADFLOW_ANONYMOUS_IP_BURST", 200)
# Erasures (DELETE /api/v1/leads?email=…), per tenant (a token bucket): each one deletes across
# five tables and writes an audit row, so a tenant's loop cannot take the database from others.
ERASURE_RATE_PER_SECOND = env_float("LEADFLOW_ERASURE_RATE_PER_SECOND", 10.0)
ERASURE_BURST = env_int("LEADFLOW_ERASURE_BURST", 100)
# Behind proxies, the address these limits use: LEADFLOW_TRUSTED_PROXIES (settings/base.py).
# Backpressure: a tier refuses leads (429) while the backlog ahead of a new lead (its tier and
# the tiers before it) is at this bound, or while its lag is over the lag bound. Critical's
# bounds are the widest, so critical intake is refused last.
BACKPRESSURE_BACKLOG = {
    "critical": env_int("LEADFLOW_BACKPRESSURE_BACKLOG_CRITICAL", 400_000),
    "normal": env_int("LEADFLOW_BACKPRESSURE_BACKLOG_NORMAL", 200_000),
    "low": env_int("LEADFLOW_BACKPRESSURE_BACKLOG_LOW", 100_000),
}
BACKPRESSURE_LAG_SECONDS = {
    "critical": env_float("LEADFLOW_BACKPRESSURE_LAG_CRITICAL", 120.0),
    "normal": env_float("LEADFLOW_BACKPRESSURE_LAG_NORMAL", 600.0),
    "low": env_float("LEADFLOW_BACKPRESSURE_LAG_LOW", 1800.0),
}
# Retry-After under backpressure is backlog ÷ drain rate, clamped to at most this.
RETRY_AFTER_MAX_SECONDS = env_int("LEADFLOW_RETRY_AFTER_MAX_SECONDS", 300)
# The mode machine (apps/control/modes.py). Lags in seconds; a transition happens only after
# its condition has held for MODE_DWELL_SECONDS, so the mode cannot flap around a threshold.
MODE_THIN_ENTER_LAG = env_float("LEADFLOW_MODE_THIN_ENTER_LAG", 30.0)  # normal tier
MODE_THIN_EXIT_LAG = env_float("LEADFLOW_MODE_THIN_EXIT_LAG", 10.0)
MODE_SEVERE_ENTER_LAG = env_float("LEADFLOW_MODE_SEVERE_ENTER_LAG", 300.0)  # normal tier
MODE_SEVERE_EXIT_LAG = env_float("LEADFLOW_MODE_SEVERE_EXIT_LAG", 120.0)
MODE_EMERGENCY_ENTER_LAG = env_float("LEADFLOW_MODE_EMERGENCY_ENTER_LAG", 60.0)  # critical
MODE_EMERGENCY_EXIT_LAG = env_float("LEADFLOW_MODE_EMERGENCY_EXIT_LAG", 20.0)
MODE_DWELL_SECONDS = env_float("LEADFLOW_MODE_DWELL_SECONDS", 10.0)
# SEVERE: the share of non-critical leads that still go on past qualification (admin can
# change it on the policy page); the rest wait in the deferred ledger.
SEVERE_SAMPLING_PERCENT = env_int("LEADFLOW_SEVERE_SAMPLING_PERCENT", 25)
# CRM sync pace per tenant (leads/s), and the pace while "CRM sync throttled" is shed.
CRM_RATE_PER_SECOND = env_float("LEADFLOW_CRM_RATE_PER_SECOND", 500.0)
CRM_THROTTLED_RATE_PER_SECOND = env_float("LEADFLOW_CRM_THROTTLED_RATE_PER_SECOND", 50.0)
# Reports and analytics are built per tenant for each period once it has ended (pool C, LOW).
REPORT_PERIOD_SECONDS = env_int("LEADFLOW_REPORT_PERIOD_SECONDS", 3600)
# Deferred work is backfilled in NORMAL mode, this many ledger rows per pass at most; a row
# sent and not done within BACKFILL_RETRY_SECONDS is sent again.
BACKFILL_BATCH = env_int("LEADFLOW_BACKFILL_BATCH", 500)
BACKFILL_RETRY_SECONDS = env_float("LEADFLOW_BACKFILL_RETRY_SECONDS", 900.0)

SCORING_CONFIG_PATH = Path(
    env_str("LEADFLOW_SCORING_CONFIG", str(BASE_DIR / "config" / "scoring.yaml"))
)

# Pool B: AI enrichment. With no URL the local provider is used.
AI_PROVIDER_URL = env_str("LEADFLOW_AI_URL", "")
AI_PROVIDER_MODEL = env_str("LEADFLOW_AI_MODEL", "gpt-4o-mini")
AI_PROVIDER_API_KEY = env_str("LEADFLOW_AI_API_KEY", "")
# One call's total deadline (connect + send + receive; leadflow/outbound.py) and reply cap.
AI_PROVIDER_TIMEOUT_SECONDS = env_float("LEADFLOW_AI_TIMEOUT_SECONDS", 2.0)
AI_RESPONSE_MAX_BYTES = env_int("LEADFLOW_AI_RESPONSE_MAX_BYTES", 1024 * 1024)

# The SSRF guard on every outbound call (leadflow/outbound_guard.py): https only unless
# ALLOW_HTTP (dev: `make run` and the tests' live stack set it; DEBUG implies it), and never an
# internal address unless the URL's host is named in ALLOWED_HOSTS (an internal CRM, a local AI).
OUTBOUND_ALLOW_HTTP = env_bool("LEADFLOW_OUTBOUND_ALLOW_HTTP", DEBUG)
OUTBOUND_ALLOWED_HOSTS = allowed_hosts_parse(env_str("LEADFLOW_OUTBOUND_ALLOWED_HOSTS", ""))
if AI_PROVIDER_URL:  # refused at start too, not only at its first call
    try:
        url_check(
            AI_PROVIDER_URL,
            OutboundPolicy(OUTBOUND_ALLOW_HTTP, frozenset(OUTBOUND_ALLOWED_HOSTS)),
            resolve="numeric",
        )
    except OutboundRefused as _refused:
        raise ImproperlyConfigured(f"LEADFLOW_AI_URL {AI_PROVIDER_URL!r}: {_refused}") from None
# Pools B and C run threads, where Celery enforces no time limit (celery/celery#9203): a task
# bounds its own work by this deadline (calls start only while one fits) and re-enqueues what
# is left, so no thread is held longer by a slow provider or CRM.
AI_TASK_DEADLINE_SECONDS = env_float("LEADFLOW_POOL_B_TASK_DEADLINE_SECONDS", 60.0)

# Circuit breakers (state and counts shared by every process through Redis): open after
# FAIL_MAX failures in a row; after RESET_SECONDS open, calls are let through again (half-open);
# SUCCESS_THRESHOLD successes in a row then close it, one failure opens it again.
BREAKER_FAIL_MAX = env_int("LEADFLOW_BREAKER_FAIL_MAX", 5)
BREAKER_RESET_SECONDS = env_float("LEADFLOW_BREAKER_RESET_SECONDS", 60.0)
BREAKER_SUCCESS_THRESHOLD = env_int("LEADFLOW_BREAKER_SUCCESS_THRESHOLD", 3)

# Pool C: CRM sync. A tenant without a webhook URL is synced by the local adapter.
# One delivery's total deadline (connect + send + receive) and how much of a reply is read.
CRM_TIMEOUT_SECONDS = env_float("LEADFLOW_CRM_TIMEOUT_SECONDS", 10.0)
CRM_RESPONSE_MAX_BYTES = env_int("LEADFLOW_CRM_RESPONSE_MAX_BYTES", 64 * 1024)
# A tenant's transient failure (5xx, 408, 429, timeout, breaker open) retries that tenant's
# leads after base x 2^(n-1) s (n = 1, 2, ...; capped), +/- the jitter share; the last one
# dead-letters them.
CRM_MAX_RETRIES = env_int("LEADFLOW_CRM_MAX_RETRIES", 3)
CRM_RETRY_BASE_SECONDS = env_float("LEADFLOW_CRM_RETRY_BASE_SECONDS", 1.0)
CRM_RETRY_JITTER = env_float("LEADFLOW_CRM_RETRY_JITTER", 0.2)
CRM_RETRY_BACKOFF_MAX_SECONDS = env_int("LEADFLOW_CRM_RETRY_BACKOFF_MAX_SECONDS", 60)
# A group the CRM refuses with 400/413/422 is split in halves to find the leads it refuses, at
# most this many more calls per group; past that the refused parts are dead-lettered whole.
CRM_REFUSAL_SPLIT_CALLS = env_int("LEADFLOW_CRM_REFUSAL_SPLIT_CALLS", 32)
CRM_TASK_DEADLINE_SECONDS = env_float("LEADFLOW_POOL_C_TASK_DEADLINE_SECONDS", 60.0)
# Pools B and C: a task that met PostgreSQL or Redis down runs again after 1, 2, 4 ... s, at
# most this long apart, for as long as it takes (never quarantined or dead-lettered for it).
DEPENDENCY_RETRY_MAX_SECONDS = env_int("LEADFLOW_DEPENDENCY_RETRY_MAX_SECONDS", 30)
# The timing invariants between these settings (deadlines against call timeouts, republish and
# stalled-lead periods against time limits and retry schedules, the visibility timeout against
# lease renewals) are system checks, run by every process as it starts (leadflow/checks.py).
