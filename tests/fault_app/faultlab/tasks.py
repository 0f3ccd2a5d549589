"""The fault tests' task: record a key idempotently, after an optional nap."""

import os
import time

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from .models import Attempt, Record


# default_retry_delay: the countdown of the retry that task_retry_on_worker_lost
# sends. Celery's default (180 s) would outlast the test's visibility timeout.
@shared_task(bind=True, default_retry_delay=1)
def record(self, key: str, seconds: float = 0.0, stubborn: bool = False, retries: int = 0) -> str:
    """Write Record(key) once, however often the message is delivered.

    `stubborn` ignores the soft time limit, as a task stuck in C code would,
    so that only the hard time limit can stop it. `retries`: retry that many
    times first, each after a 1 s countdown, as a transient error would.
    """
    attempt = Attempt.objects.create(
        key=key,
        task_id=self.request.id,
        pid=os.getpid(),
        retries=self.request.retries or 0,
        redelivered=(self.request.delivery_info or {}).get("redelivered"),
    )
    if (self.request.retries or 0) < retries:
        Attempt.objects.filter(pk=attempt.pk).update(finished=True)
        raise self.retry(countdown=1)
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            time.sleep(left)
        except SoftTimeLimitExceeded:
            if not stubborn:
                raise
    _, created = Record.objects.get_or_create(key=key, defaults={"task_id": self.request.id})
    Attempt.objects.filter(pk=attempt.pk).update(finished=True, duplicate=not created)
    return key
