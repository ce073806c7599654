"""Probes and the operator listener: /healthz, /readyz, the autoscalers' /scaling/backlog, the
worker probe, Flower's credentials, and the middleware that keeps operator URLs off the public
port."""
