"""Reference: the minimal Django view (no middleware, no apps), answering 202 with JSON."""
