"""`make bench`: LeadFlow's benchmark suite. Measures and reports; it asserts nothing.

Each scenario runs its reference (a plain WSGI app, a minimal Django view, the usual DRF +
Celery view, one Celery task per lead, COPY) in the same run, so the report's ratios hold on a
shared machine whose absolute figures drift. See bench/README.md.
"""
