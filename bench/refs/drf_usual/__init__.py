"""Reference: the usual first implementation of the intake, in DRF.

A Serializer validates the lead, Redis SET NX on the SHA-256 of the canonical body dedups
it, and Celery's apply_async queues it, one task per lead (for a batch too). The startproject
middleware and DRF's default renderers, parsers and content negotiation are all there.
With BENCH_DRF_VARIANT=serializer the view stops after validation (the Serializer's cost alone).
Keys are checked against an in-process set (BENCH_API_KEYS), like LeadFlow's tenant cache,
so neither side pays SQL for authentication.
"""
