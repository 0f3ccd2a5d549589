"""The workloads' tasks: plain @shared_task functions, as a project writes them."""

import os
import time

import redis
from celery import shared_task
from django.utils import timezone

from .models import Item

_stamps = None


@shared_task
def mark_done(item_id: int) -> None:
    """Workload 3: one idempotent write keyed on the argument, as reports/tasks.py's
    render_report ends: the UPDATE moves only a row that is not done yet."""
    Item.objects.filter(pk=item_id, done_at__isnull=True).update(done_at=timezone.now())


@shared_task
def stamp(sent_at: float) -> None:
    """Workload 5: record when this task was sent, when it started, and in which child."""
    started = time.time()
    global _stamps
    if _stamps is None:
        _stamps = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    _stamps.rpush("bench:latency", f"{sent_at} {started} {os.getpid()}")


@shared_task
def noop() -> None:
    """Workload 4: what the view enqueues."""
