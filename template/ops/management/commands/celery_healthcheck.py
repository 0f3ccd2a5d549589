"""Round-trip a tiny task through each Celery queue.

    python manage.py celery_healthcheck [--queue NAME ...] [--timeout SECONDS]

Unlike `celery inspect ping`, which only proves a worker answers broadcasts,
this proves each queue is consumed: the reply comes from whichever worker
took the message off that queue. Exits 1 when any queue is silent.
"""

import socket
import time
import uuid

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from kombu.exceptions import OperationalError

from config.celery import app
from ops.broker import REPLY_QUEUE_OPTIONS
from ops.tasks import ping


class Command(BaseCommand):
    help = "Send a ping task to each queue and report the worker and round-trip time."

    def add_arguments(self, parser):
        parser.add_argument(
            "--queue",
            action="append",
            dest="queues",
            metavar="NAME",
            help="Queue to check; repeat for several. Default: every configured queue.",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=10.0,
            help="Seconds to wait for all replies (default: 10).",
        )

    def handle(self, *args, queues, timeout, **options):
        configured = [queue.name for queue in settings.CELERY_TASK_QUEUES]
        queues = queues or configured
        unknown = sorted(set(queues) - set(configured))
        if unknown:
            raise CommandError(
                f"unknown queue(s): {', '.join(unknown)}; configured: {', '.join(configured)}"
            )

        reply_to = f"healthcheck.{socket.gethostname()}.{uuid.uuid4().hex}"
        sent, answered = {}, {}
        try:
            with app.connection_for_write() as connection:
                replies = connection.SimpleQueue(reply_to, **REPLY_QUEUE_OPTIONS)
                try:
                    for name in queues:
                        sent[name] = time.monotonic()
                        # An unanswered ping expires rather than waiting for a worker.
                        ping.apply_async(args=[reply_to, name], queue=name, expires=timeout)
                    deadline = time.monotonic() + timeout
                    while len(answered) < len(queues) and time.monotonic() < deadline:
                        try:
                            message = replies.get(
                                timeout=min(0.5, max(deadline - time.monotonic(), 0.01))
                            )
                        except replies.Empty:
                            continue
                        message.ack()
                        reply = message.payload
                        if reply["queue"] in sent and reply["queue"] not in answered:
                            answered[reply["queue"]] = (
                                reply["node"],
                                time.monotonic() - sent[reply["queue"]],
                            )
                finally:
                    replies.consumer.cancel()
                    replies.queue.delete()
                    replies.queue.exchange.delete()
                    replies.close()
        except OperationalError as exc:
            raise CommandError(f"broker unreachable: {exc}") from exc

        width = max(len(name) for name in queues)
        for name in queues:
            if name in answered:
                node, seconds = answered[name]
                self.stdout.write(f"{name:<{width}}  ok       {node}  {seconds * 1000:.1f} ms")
            else:
                self.stdout.write(f"{name:<{width}}  TIMEOUT  no reply within {timeout:g} s")
        missing = [name for name in queues if name not in answered]
        if missing:
            raise CommandError(f"no reply from queue(s): {', '.join(missing)}")
