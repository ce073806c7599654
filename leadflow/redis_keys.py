"""Redis key names, one place: every `lf:` key LeadFlow's Python code reads or writes is built
here, so a reader sees the whole keyspace at once (Lua scripts receive their keys as KEYS, the
Celery broker's own keys are kombu's).

Every key the admission and claim scripts touch (apps/intake/lua/admit.lua, apps/inbox/lua/
claim.lua) carries its shard's hash tag, `{<shard>}` (after the prefix a reader scans by), so
the inboxes can live on a Redis Cluster. A tenant belongs to shard `tenant_id % SHARDS`
(LEADFLOW_REDIS_SHARDS, default 1); each shard holds its own copy of the state admission reads
(mode, drain rate, closed tiers) and its own counters (waiting, claimed, in flight), which the
controller writes into every shard and sums across them. Why shards and not one tag per
tenant: admission updates the tier's backlog atomically with the push, so the counter must sit
in the tenant's slot; a copy per shard is written once a tick, a copy per tenant would be
written for every tenant every tick.
"""

from leadflow.env import EnvError, env_int

SHARDS = env_int("LEADFLOW_REDIS_SHARDS", 1)
if not 1 <= SHARDS <= 16384:
    raise EnvError(f"LEADFLOW_REDIS_SHARDS must be between 1 and 16384, got {SHARDS}")


def shard_of(tenant_id: int | str) -> int:
    """The shard a tenant's keys live in."""
    return int(tenant_id) % SHARDS


def shards() -> range:
    return range(SHARDS)


# --- the inboxes and admission (apps/intake/lua/admit.lua; apps/inbox/, its lua/claim.lua) ---
def shard_key(shard: int) -> str:
    """The shard's state, one hash (admission reads it with one HMGET): per tier the leads
    waiting ("<tier>"), ever claimed ("claimed:<tier>", for positions of queued leads) and in
    flight ("inflight:<tier>") in this shard; and the controller's copy of the platform state:
    "mode", "drain" (leads/s, all tiers), "closed:<tier>" (Retry-After while it closes a tier)
    and, with more than one shard, "others:<tier>" (the other shards' waiting leads at its last
    tick)."""
    return f"lf:shard:{{{shard}}}"


BACKLOG_KEY = shard_key(0)  # the first (with one shard, the only) shard's hash
MODE_KEY = "lf:mode"  # the platform mode, written by the controller (a copy in every shard)
DRAIN_KEY = "lf:drain"  # hash tier|"total" -> leads/s, written by the controller


def inbox_key(tier: str, tenant_id: int | str) -> str:
    return f"lf:inbox:{tier}:{tenant_id}:{{{shard_of(tenant_id)}}}"


def active_tenants_key(tier: str, shard: int = 0) -> str:
    return f"lf:active:{tier}:{{{shard}}}"


def inflight_key(shard: int = 0) -> str:
    """zset batch id -> when last published (claimed or republished)."""
    return f"lf:inflight:{{{shard}}}"


INFLIGHT_KEY = inflight_key(0)


def batch_id_new(tier: str, shard: int, unique: str) -> str:
    """An in-flight batch's id names its tier and shard: no read to learn either later."""
    return f"{tier}-{shard}-{unique}"


def batch_shard(batch_id: str) -> int:
    """The shard a batch id names (0 for an id from before ids carried it)."""
    parts = batch_id.split("-", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else 0


def inflight_batch_key(batch_id: str) -> str:
    return f"lf:inflight:{{{batch_shard(batch_id)}}}:{batch_id}"


def inflight_since_key(tier: str, shard: int = 0) -> str:
    """zset batch id -> received_at of the batch's oldest lead: the tier's in-flight lag."""
    return f"lf:inflight-since:{tier}:{{{shard}}}"


def dedup_key(tenant_id: int, digest: str) -> str:
    return f"lf:dedup:{tenant_id}:{{{shard_of(tenant_id)}}}:{digest}"


def trace_shard(trace_id: str) -> int:
    """The shard a trace id belongs to: admission makes a lead's trace id name its tenant's
    shard (apps/intake/admission.py trace_ids_new), so a trace id alone finds its key."""
    if SHARDS == 1:
        return 0
    try:
        return int(trace_id[-4:], 16) % SHARDS
    except ValueError:  # not a trace id admission made (a client's typo): no key anywhere
        return 0


def trace_key(trace_id: str) -> str:
    return f"lf:trace:{{{trace_shard(trace_id)}}}:{trace_id}"


# A tenant's admission state (apps/intake/lua/admit.lua keeps it).
def request_window_key(tenant_id: int) -> str:
    return f"lf:rate:{tenant_id}:{{{shard_of(tenant_id)}}}"


def ip_bucket_key(tenant_id: int | None, ip: str) -> str:
    """Requests from one IP address: inside a tenant, or without a valid key (tenant None)."""
    if tenant_id is None:
        return f"lf:ip:anonymous:{ip}"
    return f"lf:ip:{tenant_id}:{{{shard_of(tenant_id)}}}:{ip}"


def erasure_bucket_key(tenant_id: int) -> str:
    """A tenant's erasure requests (apps/intake/erasure_api.py)."""
    return f"lf:erasure:{tenant_id}:{{{shard_of(tenant_id)}}}"


def tenant_state_key(tenant_id: int) -> str:
    """One hash per tenant, read with one HMGET and written with one HSET by admit.lua:
    the hourly budget {hour, used}, the critical credits' token bucket {tokens, at}, and the
    intake's side of the tenant's hourly receipt, "<epoch hour>|<kind>" -> leads (apps/usage
    reads those fields and flushes them to PostgreSQL)."""
    return f"lf:tenant:{tenant_id}:{{{shard_of(tenant_id)}}}"


# The three are fields of the one hash; the names say which fields a reader wants.
credits_key = budget_key = receipt_key = tenant_state_key


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
