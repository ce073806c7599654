"""Pool C's CRM delivery: adapters (webhook, local), per-tenant pace and breaker, delivery
leases so two runs never send the same leads, retries on the CRM's schedule, dead letters and
their replay."""
