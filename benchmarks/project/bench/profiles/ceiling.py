"""Profile "ceiling": the reference with nothing kept that costs throughput:
results ignored (and no result backend), no events, prefetch 128, early acks,
kombu's own Redis transport."""

from bench.profiles.reference import *  # noqa: F403

CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_TASK_SEND_SENT_EVENT = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 128
CELERY_TASK_ACKS_LATE = False
