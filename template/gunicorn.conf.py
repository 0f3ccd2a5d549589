"""gunicorn reads this file from the working directory; the command lines of
the deploy files give the other settings. https://gunicorn.org/reference/settings/
"""

import os

from prometheus_client import multiprocess

from ops.logs import JSON_FORMATTER

# The access log: the request id (ops/logs.py) closes each line.
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s" %({x-request-id}o)s'

if os.environ.get("DJANGO_LOG_FORMAT") == "json":
    # gunicorn's own records and its access log, as JSON lines like Django's.
    logconfig_dict = {
        "formatters": {"json": JSON_FORMATTER},
        "filters": {"context": {"()": "ops.logs.Context"}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["context"],
            },
        },
        "loggers": {
            "gunicorn.error": {"handlers": ["console"], "level": "INFO", "propagate": False},
            "gunicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
        },
    }


def on_starting(server):
    """With METRICS_PORT set, listen for Prometheus too: config/wsgi.py answers
    scrapes there, and only there (ops/metrics.py)."""
    if port := os.environ.get("METRICS_PORT"):
        from ops.metrics import prepare_directory

        prepare_directory()
        address = os.environ.get("METRICS_ADDRESS", "127.0.0.1")
        server.cfg.set("bind", [*server.cfg.bind, f"{address}:{port}"])


def child_exit(server, worker):
    """Drop the live gauges of a worker that exited (its counters stay)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
