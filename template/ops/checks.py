"""System checks for Celery settings that fail silently when wrong.

They run with every manage.py command, and in `check --deploy`.
"""

from django.conf import settings
from django.core import checks


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
