"""Redis key names, one place: every `lf:` key LeadFlow's Python code reads or writes is built
here (Lua scripts receive theirs as KEYS)."""


def pool_workers_key(pool: str) -> str:
    """A sorted set: worker node name -> time of its last heartbeat (workers/metrics.py)."""
    return f"lf:workers:{pool}"
