"""The load side of benchmarks/suite.py, run inside the project: prints JSON.

manage.py bench config                    effective Celery settings and transport
manage.py bench enqueue accumulate|mark_done N
manage.py bench latency RATE SECONDS      .delay() to task start at a fixed rate, and its slowest tasks
manage.py bench tasks NODE                tasks the worker NODE ran, by name
manage.py bench probe QUEUE...            one no-op task to each queue
"""

import json
import os
import statistics
import time

import redis
from django.conf import settings
from django.core.management.base import BaseCommand

from bench.models import Item
from bench.tasks import mark_done, stamp
from config.celery import app

# What the profiles differ in, by Celery's setting names.
SETTINGS = [
    "task_acks_late",
    "worker_prefetch_multiplier",
    "task_ignore_result",
    "result_backend",
    "result_extended",
    "result_backend_always_retry",
    "result_backend_max_retries",
    "worker_send_task_events",
    "task_send_sent_event",
    "task_time_limit",
    "task_soft_time_limit",
    "worker_hijack_root_logger",
    "worker_max_tasks_per_child",
    "worker_max_memory_per_child",
    "task_serializer",
    "accept_content",
]


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["config", "enqueue", "latency", "tasks", "probe"])
        parser.add_argument("params", nargs="*")

    def handle(self, *args, action, params, **options):
        result = getattr(self, action)(*params)
        self.stdout.write(json.dumps(result))

    def config(self):
        conf = {name: app.conf[name] for name in SETTINGS}
        if conf["result_backend"] and "://" in conf["result_backend"]:
            conf["result_backend"] = conf["result_backend"].partition("://")[0] + "://…"
        with app.connection_for_write() as connection:
            cls = connection.transport_cls if isinstance(connection.transport_cls, type) else None
            transport = cls or type(connection.transport)
        return {
            "settings_module": settings.SETTINGS_MODULE,
            "celery": conf,
            "transport": f"{transport.__module__}:{transport.__qualname__}",
        }

    def enqueue(self, task, count):
        """Send `count` tasks with .delay(), one by one, as web requests would."""
        count = int(count)
        if task == "accumulate":
            accumulate = app.tasks["celery.accumulate"]
            calls = [(accumulate, (n,)) for n in range(count)]
        else:
            ids = list(Item.objects.filter(done_at__isnull=True).values_list("pk", flat=True)[:count])
            calls = [(mark_done, (pk,)) for pk in ids]
        started = time.perf_counter()
        for function, call_args in calls:
            function.delay(*call_args)
        return {"sent": len(calls), "seconds": time.perf_counter() - started}

    def latency(self, rate, seconds):
        """Send stamp tasks at `rate` per second for `seconds`, then wait for them all."""
        rate, seconds = float(rate), float(seconds)
        stamps = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
        stamps.delete("bench:latency")
        total = int(rate * seconds)
        started = time.monotonic()
        for n in range(total):
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            stamp.delay(time.time())
        behind = time.monotonic() - started - seconds
        deadline = time.monotonic() + 120
        while stamps.llen("bench:latency") < total and time.monotonic() < deadline:
            time.sleep(0.1)
        runs = sorted(tuple(map(float, v.split())) for v in stamps.lrange("bench:latency", 0, -1))
        first = runs[0][0] if runs else 0.0
        # (delay, seconds into the run it was sent, pid), slowest last
        delays = sorted((started - sent, sent - first, int(pid)) for sent, started, pid in runs)
        values = [delay for delay, _, _ in delays]
        cuts = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99
        children = {}  # pid: seconds into the run of its first task, so a replaced child shows
        for sent, _, pid in runs:
            children.setdefault(int(pid), round(sent - first, 3))
        return {
            "sent": total,
            "started": len(values),
            "sender_behind_s": behind,
            "p50": cuts[49],
            "p99": cuts[98],
            "children": children,
            "slowest": [{"ms": round(d * 1000, 1), "sent_at_s": round(at, 3), "pid": p} for d, at, p in delays[-10:]],
        }

    def tasks(self, node):
        """How many tasks of each name the worker `node` ran, and how many it is running."""
        inspect = app.control.inspect(destination=[node], timeout=10)
        stats, active = inspect.stats() or {}, inspect.active() or {}
        return {"total": stats.get(node, {}).get("total", {}), "active": len(active.get(node, []))}

    def probe(self, *queues):
        accumulate = app.tasks["celery.accumulate"]
        for queue in queues:
            accumulate.apply_async((0,), queue=queue)
        return {"sent": len(queues)}
