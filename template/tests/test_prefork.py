import os
from types import SimpleNamespace

import pytest
from celery.concurrency.asynpool import AsynPool
from kombu.asynchronous import Hub

import ops.prefork  # noqa: F401  (config/celery.py imports it too)


@pytest.fixture
def hub():
    loop = Hub()
    yield loop
    loop.close()


def pool():
    return SimpleNamespace(_event_process_exit=lambda *args: None)


def test_a_process_that_exited_is_not_tracked_again(hub):
    """What a consumer restart meets after a lost connection (celery/celery#9250):
    Celery 5.7 hands None to the event loop, and the worker stops."""
    exited = SimpleNamespace(_sentinel_poll=None)
    AsynPool._track_child_process(pool(), exited, hub)
    assert hub.readers == {}


def test_a_live_process_is_tracked(hub):
    read, write = os.pipe()
    try:
        live = SimpleNamespace(_popen=SimpleNamespace(sentinel=read))
        AsynPool._track_child_process(pool(), live, hub)
        assert list(hub.readers) == [live._sentinel_poll]
        hub.remove(live._sentinel_poll)
        os.close(live._sentinel_poll)
    finally:
        os.close(read)
        os.close(write)
