"""Talking to the broker directly, outside of task calls."""

from config.celery import app

# celery_healthcheck's reply queue: deleted by the command when it is done and,
# on RabbitMQ, expired by the broker a minute after its last use should the
# command die first. Durable because RabbitMQ 4 deprecates transient queues
# that are not exclusive, and an exclusive one would lock out the worker that
# replies. Both ends must declare it identically.
REPLY_QUEUE_OPTIONS = {
    "queue_opts": {"durable": True, "auto_delete": False},
    "queue_args": {"x-expires": 60_000},
    "exchange_opts": {"durable": True, "auto_delete": False},
}


def ensure_broker(timeout: float = 2.0) -> None:
    """Connect to the broker, or raise kombu.exceptions.OperationalError.

    One attempt at each node of a failover list (`amqp://a;amqp://b;...`), in
    turn, without a pause: one node down leaves the broker reachable, and a
    request or a probe behind a partition answers 503 within seconds (the
    `timeout` of each attempt). On Redis, BROKER_SILENCE_LIMITS'
    socket_connect_timeout bounds an attempt (the transport ignores
    `connect_timeout`); sentinel:// asks every sentinel in each attempt.
    """
    with app.connection_for_write(connect_timeout=timeout) as connection:
        nodes = len(connection.alt) or 1  # kombu moves to the next after each failure
        connection.ensure_connection(
            max_retries=nodes - 1, interval_start=0, timeout=timeout * nodes
        )
