"""Retention and erasure of personal data: the job the control process runs to anonymize leads
past their tenant's retention (retention.py), erasure of a person's leads by e-mail for the API
and the admin (erasure.py), the audit of both (models.py) and their metrics."""
