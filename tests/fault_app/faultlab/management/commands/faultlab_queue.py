"""Print, as JSON, the messages of a queue the broker holds: ready ones, the
unacknowledged ones (delivered to a worker; on Redis back after the visibility
timeout, on RabbitMQ once the worker's connection closes, which a partitioned
worker's does only when its heartbeats are missed) and, on Redis, the landed
ones (taken by a worker that had not claimed them yet, back after
ops/transport.py's landing timeout)."""

import json
import os
import shlex
import shutil
import subprocess

from django.core.management.base import BaseCommand

from config.celery import app


class Command(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument("queue")

    def handle(self, queue, **options):
        with app.connection_for_read() as connection:
            channel = connection.default_channel
            if connection.transport.driver_type == "redis":
                # A passive declare fails on an empty Redis queue: its list is gone.
                ready = channel._size(queue)
                unacked = channel.client.hlen(channel.unacked_key)
                landed = channel.client.llen(channel._landing_keys(queue)[0])
            else:
                ready = channel.queue_declare(queue=queue, passive=True).message_count
                unacked = rabbitmq_unacked(connection.virtual_host, queue)
                landed = None
        self.stdout.write(json.dumps({"ready": ready, "unacked": unacked, "landed": landed}))


def rabbitmq_unacked(vhost: str, queue: str) -> int:
    """The queue's unacknowledged messages, which AMQP's passive declare does not count.
    FAULTLAB_RABBITMQCTL reaches a node elsewhere (`docker exec <container> rabbitmqctl`)."""
    here = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    ctl = shlex.split(os.environ.get("FAULTLAB_RABBITMQCTL", "")) or [here]
    listed = subprocess.run(
        [*ctl, "-q", "list_queues", "-p", vhost,
         "name", "messages_unacknowledged", "--no-table-headers"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    counts = dict(line.split("\t") for line in listed.stdout.splitlines() if "\t" in line)
    return int(counts.get(queue, 0))
