"""LeadFlow's Django apps, in the pipeline's order: intake (the API's POSTs and reads) → inbox
(per-tenant Redis inboxes) → control (dispatcher, controller, ledger, backfill; status holds
the operator's reads of it) → the pools' services: leads (pool A, qualification), enrichment
(pool B), crm and reports (pool C). tenants and health serve them all. Each app owns its
models, its services (writes) and selectors (reads); work moves between stages by task name
(leadflow/handoff.py), and the import contracts in pyproject.toml keep the dependencies one
way."""
