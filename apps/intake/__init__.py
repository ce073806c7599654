"""The intake: POST /api/v1/leads(/batch) on the fast POST path (fast_post.py: authenticate,
validate, admit in one Redis round trip, answer 202), its DRF contract and OpenAPI schema
(contract*.py, schema.py), the read of a lead's status, and the one JSON error shape
(errors.py). It writes only to Redis (admission.py, lua/admit.lua); no SQL on the hot path."""
