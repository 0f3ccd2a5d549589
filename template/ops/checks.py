"""System checks for settings that fail silently when wrong.

They run with every manage.py command, and in `check --deploy`.
"""

import os

from django.conf import settings
from django.core import checks
from django.utils.module_loading import autodiscover_modules

from config.celery import app

from . import tls


@checks.register("celery")
def check_visibility_timeout(app_configs, **kwargs):
    """On Redis, a message unacknowledged for longer than the visibility timeout
    is delivered again, even while it runs or waits for its ETA. It must
    outlast the hard time limit and the longest countdown.
    https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/redis.html#caveats
    """
    longest = max(settings.CELERY_TASK_TIME_LIMIT, settings.TASK_MAX_COUNTDOWN)
    errors = []
    for name in ("CELERY_BROKER_TRANSPORT_OPTIONS", "CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS"):
        timeout = getattr(settings, name, {}).get("visibility_timeout")
        if timeout is not None and timeout <= longest:
            errors.append(
                checks.Error(
                    f"{name}['visibility_timeout'] is {timeout}s, not above the hard time "
                    f"limit or the longest countdown ({longest}s): tasks would run twice.",
                    hint="Raise the visibility timeout, or lower the limits.",
                    id="ops.E001",
                )
            )
    return errors


@checks.register("celery")
def check_retry_delays(app_configs, **kwargs):
    """A pool child killed mid-task retries its task after the task's
    default_retry_delay (CELERY_TASK_RETRY_ON_WORKER_LOST): a countdown like any
    other, so TASK_MAX_COUNTDOWN, and with it the visibility timeout, must cover it.
    """
    autodiscover_modules("tasks")  # import every app's tasks.py, as the worker does
    return [
        checks.Error(
            f"Retries after a lost worker in {task.default_retry_delay}s, "
            f"beyond TASK_MAX_COUNTDOWN ({settings.TASK_MAX_COUNTDOWN}s).",
            hint="Raise TASK_MAX_COUNTDOWN, or give the task a shorter default_retry_delay.",
            obj=name,
            id="ops.E002",
        )
        for name, task in sorted(app.tasks.items())
        if not name.startswith("celery.") and task.default_retry_delay > settings.TASK_MAX_COUNTDOWN
    ]


@checks.register("metrics")
def check_metrics_directory(app_configs, **kwargs):
    """prometheus_client picks its mode when it is first imported, from the
    environment. A PROMETHEUS_MULTIPROC_DIR that .env sets comes too late: a
    prefork worker would then report its main process alone, and gunicorn one
    worker at a time.
    """
    from . import metrics

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") and not metrics.multiprocess_mode():
        return [
            checks.Error(
                "PROMETHEUS_MULTIPROC_DIR was set after prometheus_client was imported.",
                hint="Set it in the process's environment (the deploy files do), not in .env.",
                id="ops.E003",
            )
        ]
    return []


@checks.register("celery", checks.Tags.security, deploy=True)
def check_tls_verification(app_configs, **kwargs):
    """A TLS link whose certificate is not checked can be answered by anyone on
    the path (ops/tls.py). Off only by BROKER_TLS_VERIFY=false, or by a
    rediss:// URL's own ssl_cert_reqs."""
    return [
        checks.Warning(
            f"{url} is a TLS URL whose server certificate is not verified.",
            hint="Remove BROKER_TLS_VERIFY=false, or ssl_cert_reqs from the URL; "
            "BROKER_TLS_CA_FILE names the CA of a private certificate.",
            id="ops.W004",
        )
        for url, options in tls.LINKS
        if isinstance(getattr(settings, url, None), str)
        and tls.unverified(getattr(settings, url), getattr(settings, options, None))
    ]
