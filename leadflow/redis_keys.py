"""Redis key names, one place: every `lf:` key LeadFlow's Python code reads or writes is built
here, so a reader sees the whole keyspace at once (Lua scripts receive their keys as KEYS, the
Celery broker's own keys are kombu's). A key with `{tenant}` in braces keeps one tenant's keys
in one Redis Cluster slot.
"""

# --- the inboxes and admission (apps/intake/lua/admit.lua; apps/inbox/, its lua/claim.lua) ---
BACKLOG_KEY = "lf:backlog"  # hash tier -> leads waiting in inboxes
CLAIMED_KEY = "lf:claimed"  # hash tier -> leads ever claimed (positions of queued leads)
DRAIN_KEY = "lf:drain"  # hash tier|"total" -> leads/s, written by the controller
MODE_KEY = "lf:mode"  # the platform mode, written by the controller
CLOSED_KEY = "lf:closed"  # hash tier -> Retry-After (s) while the controller closes a tier
INFLIGHT_KEY = "lf:inflight"  # zset batch id -> when last published (claimed or republished)
INFLIGHT_LEADS_KEY = "lf:inflight-leads"  # hash tier -> leads in flight


def inbox_key(tier: str, tenant_id: int | str) -> str:
    return f"lf:inbox:{tier}:{tenant_id}"


def active_tenants_key(tier: str) -> str:
    return f"lf:active:{tier}"


def inflight_batch_key(batch_id: str) -> str:
    return f"lf:inflight:{batch_id}"


def inflight_since_key(tier: str) -> str:
    """zset batch id -> received_at of the batch's oldest lead: the tier's in-flight lag."""
    return f"lf:inflight-since:{tier}"


def dedup_key(tenant_id: int, digest: str) -> str:
    return f"lf:dedup:{tenant_id}:{digest}"


def trace_key(trace_id: str) -> str:
    return f"lf:trace:{trace_id}"


# A tenant's admission state (apps/intake/lua/admit.lua keeps it).
def request_window_key(tenant_id: int) -> str:
    return f"lf:rate:{tenant_id}"


def ip_bucket_key(tenant_id: int | None, ip: str) -> str:
    """Requests from one IP address: inside a tenant, or without a valid key (tenant None)."""
    return f"lf:ip:{tenant_id if tenant_id is not None else 'anonymous'}:{ip}"


def credits_key(tenant_id: int) -> str:
    return f"lf:credits:{tenant_id}"


def budget_key(tenant_id: int) -> str:
    return f"lf:budget:{tenant_id}"


def receipt_key(tenant_id: int) -> str:
    """hash "<epoch hour>|<kind>" -> leads: the intake's side of the tenant's hourly receipt
    (admit.lua counts, apps/usage flushes to PostgreSQL)."""
    return f"lf:receipt:{tenant_id}"


# --- tenants and API keys (apps/tenants) ---
TENANTS_CHANGED_CHANNEL = "lf:tenants:changed"  # pub/sub: a tenant or key changed
TENANTS_AUTH_KEY = "lf:tenants:auth"  # hash: key digest -> TenantAuth and when it was loaded
KEYS_LAST_USED_KEY = "lf:keys:last_used"  # hash: key id -> epoch seconds of its last use
KEYS_LAST_USED_WRITER_KEY = "lf:keys:last_used:writer"  # lock: one writer to PostgreSQL

# --- the control process (apps/control) ---
CONTROL_STATE_KEY = "lf:state"  # the shedding state every process reads
CONTROL_SCALING_KEY = "lf:scaling"
CONTROL_LEADER_KEY = "lf:control:leader"
CONTROL_MACHINE_KEY = "lf:control:machine"  # the mode machine's state, for the next leader
CONTROL_HISTORY_KEY = "lf:control:history"
CONTROL_FORECAST_KEY = "lf:control:forecast"  # hash: "<tier>.level|trend" of the forecast
CONTROL_POLICY_KEY = "lf:control:policy"  # the policy's copy, for PostgreSQL outages
INFLIGHT_REPUBLISHED_KEY = "lf:inflight-republished"  # hash tier -> batches republished, ever

# --- the pools ---
ENRICH_DOMAIN_CACHE_PREFIX = "lf:enrich:domain:"  # + domain: pool B's cached company profile
REPORTS_LAST_PERIOD_KEY = "lf:reports:last_period:{period}"  # epoch s, per period length
WORKERS_RECYCLES_KEY = "lf:workers:recycles"  # hash: "<pool>:<reason>" -> recycles so far


def pool_workers_key(pool: str) -> str:
    """A sorted set: worker node name -> time of its last heartbeat (workers/metrics.py)."""
    return f"lf:workers:{pool}"


def crm_lease_key(tenant_id: int, trace_id: str) -> str:
    return f"lf:crm:{{{tenant_id}}}:lease:{trace_id}"


def crm_sent_key(tenant_id: int, trace_id: str) -> str:
    return f"lf:crm:{{{tenant_id}}}:sent:{trace_id}"


def crm_reply_key(tenant_id: int, delivery: str) -> str:
    return f"lf:crm:{{{tenant_id}}}:reply:{delivery}"


def crm_pace_key(tenant_id: int) -> str:
    return f"lf:crm:pace:{tenant_id}"


# --- shared by every process (leadflow/) ---
METRICS_TENANT_RANKING_KEY = "lf:metrics:tenants"  # list of tenant ids with labels, best first


def breaker_namespace(name: str) -> str:
    """pybreaker's Redis storage keeps a breaker's keys under this namespace."""
    return f"lf:{name}"


def breaker_failing_key(name: str) -> str:
    """Set by a failed call through the breaker, deleted by the first success while closed."""
    return f"lf:{name}:failing"


def breaker_recovered_key(name: str) -> str:
    """When the dependency last answered again after failing (epoch seconds)."""
    return f"lf:{name}:recovered_at"


def breaker_recoveries_key(name: str) -> str:
    """How many recoveries were recorded (each once, whichever process saw it)."""
    return f"lf:{name}:recoveries"


AI_PROBE_KEY = "lf:ai:probe"  # set while a probe of the AI provider is asked for (NX, EX)
