"""ops/stall.py: a consumer that ready messages no longer reach is reconnected."""

from types import SimpleNamespace

import pytest
from amqp.exceptions import NotFound
from celery.worker import state
from kombu import Queue

import ops.stall
from config.celery import app
from ops.stall import ConsumerStalled, StalledConsumer


class Channel:
    """A channel whose passive queue.declare reports the broker's ready counts."""

    def __init__(self, ready: dict):
        self.ready = ready
        self.closed = False

    def queue_declare(self, queue, passive):
        assert passive, "a check must never create a queue"
        if queue not in self.ready:
            self.closed = True  # RabbitMQ closes the channel on a 404
            raise NotFound(f"no queue '{queue}'")
        return queue, self.ready[queue], 1

    def close(self):
        self.closed = True


class Timer:
    def call_repeatedly(self, interval, function, args):
        self.repeated = (interval, function, args)
        return SimpleNamespace(cancel=lambda: None)


@pytest.fixture
def consumer():
    """A worker's consumer of `default`, its broker holding what `ready` says."""
    ready = {"default": 0}
    channels = []

    def channel():
        channels.append(Channel(ready))
        return channels[-1]

    c = SimpleNamespace(
        timer=Timer(),
        connection=SimpleNamespace(channel=channel),
        task_consumer=SimpleNamespace(queues=[Queue("default")]),
        ready=ready,
        channels=channels,
    )
    step = StalledConsumer(SimpleNamespace())
    step.start(c)
    return step, c


class Request:
    """A task running in the pool (celery.worker.state holds weak references)."""


def receive():
    ops.stall.count_received(sender=None, request=None)


def test_the_worker_runs_the_step():
    assert StalledConsumer in app.steps["consumer"]


def test_stalled_is_a_connection_error_the_event_loop_lets_through():
    # Celery's asynloop propagates the connection's connection_errors from timers.
    assert isinstance(ConsumerStalled("x"), app.connection_for_read().connection_errors)


def test_checks_every_interval_from_the_event_loop(consumer):
    step, c = consumer
    interval, function, args = c.timer.repeated
    assert interval == ops.stall.INTERVAL
    assert function == step.check and args == (c,)


def test_ready_messages_at_two_idle_checks_in_a_row_reconnect(consumer):
    step, c = consumer
    c.ready["default"] = 5
    step.check(c)  # could be on their way
    with pytest.raises(ConsumerStalled):
        step.check(c)
    assert all(channel.closed for channel in c.channels)


def test_a_message_received_in_between_clears_the_suspicion(consumer):
    step, c = consumer
    c.ready["default"] = 5
    step.check(c)
    receive()
    step.check(c)
    receive()
    step.check(c)


def test_a_busy_worker_is_not_asked(consumer):
    step, c = consumer
    c.ready["default"] = 5
    step.check(c)
    request = Request()
    state.active_requests.add(request)
    try:
        step.check(c)
        step.check(c)
    finally:
        state.active_requests.discard(request)
    step.check(c)  # the suspicion starts again


def test_an_empty_or_missing_queue_is_no_stall(consumer):
    step, c = consumer
    c.task_consumer.queues.append(Queue("gone"))
    for _ in range(3):
        step.check(c)
    assert all(channel.closed for channel in c.channels)
