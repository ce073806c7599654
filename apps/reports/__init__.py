"""Pool C's LOW work: per-tenant reports and analytics built for each ended period, scheduled
by the control process and shed first under overload (recorded in the ledger for backfill)."""
