"""Record every task that fails for good in the DeadLetter table."""

import logging

from celery.signals import task_failure

from . import metrics
from .models import DeadLetter

logger = logging.getLogger(__name__)


@task_failure.connect
def record_dead_letter(sender, task_id, exception, args, kwargs, einfo, **extra) -> None:
    """Celery sends task_failure once retries are exhausted (a retry is not a
    failure), on a permanent error, and on a hard time limit.
    """
    _, created = DeadLetter.objects.get_or_create(
        task_id=task_id,
        defaults={
            "task_name": sender.name,
            "args": list(args or []),
            "kwargs": dict(kwargs or {}),
            "exception": repr(exception),
            "traceback": str(einfo or ""),
            "retries": sender.request.retries or 0,
        },
    )
    if created:
        metrics.dead_lettered(sender)
        logger.error("dead letter: %s[%s] %r", sender.name, task_id, exception)
