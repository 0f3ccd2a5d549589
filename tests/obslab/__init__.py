"""Observability of a booted project: a real Prometheus scraping it (prometheus.py), an
OTLP/HTTP receiver (otlp.py), the dashboard's queries (dashboard.py) and the stacks of
a stuck process for a failure message (spy.py)."""
