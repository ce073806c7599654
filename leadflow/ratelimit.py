"""Token buckets in Redis, shared by every process: the bots' per-IP limit and the CRM's pace.

The intake's per-tenant limits run inside its admission script (apps/intake/lua/admit.lua),
which includes the same bucket code (leadflow/lua/token_bucket.lua).
"""

from dataclasses import dataclass
from pathlib import Path

from leadflow.redis_conn import lua_script

LUA_DIR = Path(__file__).parent / "lua"
TOKEN_BUCKET_LUA = LUA_DIR / "token_bucket.lua"


@dataclass(frozen=True, slots=True)
class BucketAnswer:
    allowed: bool
    wait_seconds: float  # until the cost would be allowed; 0 when allowed, -1 if never


def bucket_take(
    key: str, capacity: float, refill_per_second: float, cost: float = 1
) -> BucketAnswer:
    allowed, wait = lua_script(LUA_DIR / "bucket_take.lua", TOKEN_BUCKET_LUA)(
        keys=[key], args=[capacity, refill_per_second, cost]
    )
    return BucketAnswer(allowed=bool(allowed), wait_seconds=float(wait))
