"""Print, as JSON, the messages of a queue the broker holds: ready ones, and on
Redis the unacknowledged ones (delivered to a worker, back after the visibility
timeout) and the landed ones (taken by a worker that had not claimed them yet,
back after ops/transport.py's landing timeout)."""

import json

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
                unacked = landed = None
        self.stdout.write(json.dumps({"ready": ready, "unacked": unacked, "landed": landed}))
