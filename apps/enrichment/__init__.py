"""Pool B's services: AI enrichment of qualified leads through a provider with a timeout and a
circuit breaker, a per-domain cache, and the local fallback (leads flagged ai_degraded and
redone later from the ledger)."""
