"""Tenants and their API keys (stored hashed), their limits and CRM settings; the in-process
tenant cache the intake authenticates from (invalidated on change, no SQL per request), and
the keys' last-used times written in the background."""
