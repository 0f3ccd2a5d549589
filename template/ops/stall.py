"""A consumer RabbitMQ stopped feeding: noticed, and replaced.

AMQP heartbeats prove that a worker's connection is alive, not that its
consumer is fed. The template's partition tests met a worker whose connection
stayed alive, with no error and no basic.cancel, while its consumer received
nothing for minutes after the partition healed and its queue held hundreds of
ready messages (docs/reliability.md, "What the fault tests found"). Neither
Celery nor kombu notices that, and the liveness beats go on.

So, every 20 s while this worker is idle (no task running, none reserved),
this consumer step asks RabbitMQ how many messages are ready in the queues the
worker consumes: a passive queue.declare, on a channel of its own. An idle
consumer with free prefetch is sent any ready message at once; ready messages
at two checks in a row, with none received in between, mean it is not being
fed. The step then raises a connection error in the consumer's event loop, as a
missed heartbeat does: Celery closes the connection, connects again and
consumes anew. The worker, its pool and its pid stay.

config/celery.py adds the step.
"""

import logging

from amqp.exceptions import ChannelError, ConnectionForced
from celery import bootsteps
from celery.signals import task_received
from celery.worker import state

logger = logging.getLogger(__name__)

# Seconds between checks. A consumer fed for the last time just after one check
# is suspected at the next but one, and reconnected at the one after: within
# three intervals, 60 s, the bound of the worker's other liveness checks.
INTERVAL = 20.0

# Task messages this process received: a check compares it with the last one's.
received = 0


@task_received.connect
def count_received(**kwargs):
    global received
    received += 1


class ConsumerStalled(ConnectionForced):
    """The queue has ready messages that never reach this idle consumer."""


class StalledConsumer(bootsteps.StartStopStep):
    """Reconnects a consumer that its queues' ready messages no longer reach."""

    # Once the worker consumes its queues.
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.timer = None

    def start(self, c):
        # Anew on each (re)connection: whether the last check found ready
        # messages, and the receipts counted by then.
        self.suspect, self.received = False, received
        self.timer = c.timer.call_repeatedly(INTERVAL, self.check, (c,))

    def stop(self, c):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def check(self, c):
        """Called from the consumer's event loop, every INTERVAL seconds."""
        fed, self.received = received != self.received, received
        if fed or state.active_requests or state.reserved_requests:
            self.suspect = False
            return
        ready = self.ready(c)
        if ready and self.suspect:
            logger.error(
                "Consumer stalled: %s ready on the broker, and none delivered to this idle "
                "worker for %.0f s; reconnecting",
                ", ".join(f"{count} in {name}" for name, count in sorted(ready.items())),
                2 * INTERVAL,  # none since the check before the last one
            )
            # A connection error propagates out of the event loop's timers (Celery's
            # asynloop sets the hub's propagate_errors), and the consumer restarts.
            raise ConsumerStalled("consumer stalled: ready messages never delivered")
        self.suspect = bool(ready)

    @staticmethod
    def ready(c) -> dict:
        """{queue: ready messages} of the queues the worker consumes, with any."""
        consumer = c.task_consumer  # None once the Tasks step has shut down
        if consumer is None:
            return {}
        counts = {}
        channel = c.connection.channel()
        try:
            for queue in consumer.queues:
                try:
                    _, count, _ = channel.queue_declare(queue=queue.name, passive=True)
                except ChannelError:
                    # The queue is gone (a 404 closes the channel): nothing waits in it.
                    channel = c.connection.channel()
                    continue
                if count:
                    counts[queue.name] = count
        finally:
            channel.close()
        return counts
