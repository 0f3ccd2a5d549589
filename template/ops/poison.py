"""Where RabbitMQ puts a task message it would otherwise drop: <queue>.poison.

A quorum queue counts the deliveries of each message (a requeue, a crashed
worker, a lost connection) and, past its delivery limit (20 in RabbitMQ 4),
dead-letters it: to the exchange the work queues name in x-dead-letter-exchange
(config/settings.py), or nowhere, and the message is gone. Such a "poison
message" most often crashes its worker each time it runs. This consumer step
declares, each time the worker connects, one queue per queue it consumes,
`<queue>.poison`, which no worker consumes. A message there waits for someone
to look at it, and can be moved back once fixed (a shovel, or the management
UI's "Move messages"): https://www.rabbitmq.com/docs/quorum-queues#poison-message-handling

Not ops' dead letters (ops/base.py), which record tasks that failed.
"""

from celery import bootsteps
from django.conf import settings
from kombu import Queue


def poison_queue(queue: Queue) -> Queue:
    # A message keeps its routing key when it is dead-lettered; after a countdown
    # (native delayed delivery) that key has the delay's words in front: "#.".
    return Queue(
        f"{queue.name}.poison",
        settings.POISON,
        routing_key=f"#.{queue.routing_key}",
        queue_arguments={"x-queue-type": "quorum"},
    )


class PoisonQueues(bootsteps.StartStopStep):
    """Declares the poison queues of the queues this worker consumes."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c):
        channel = c.connection.default_channel
        for queue in c.app.amqp.queues.consume_from.values():
            if (queue.queue_arguments or {}).get("x-dead-letter-exchange") == settings.POISON.name:
                poison_queue(queue).bind(channel).declare()
