from types import SimpleNamespace
from unittest import mock

import pytest
from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.concurrency.thread import TaskPool as ThreadPool

from ops import tracing


@pytest.mark.parametrize(
    ("pool", "in_main_process"),
    [
        ("prefork", False),
        (PreforkPool, False),
        ("threads", True),
        (ThreadPool, True),
        ("solo", True),
    ],
)
def test_a_worker_traces_from_its_main_process_unless_its_pool_forks(pool, in_main_process):
    """A prefork pool's children trace themselves (worker_process_init): a provider
    made in the main process would be inherited by each, its export thread dead."""
    with mock.patch.object(tracing, "start") as start:
        tracing.trace_worker(sender=SimpleNamespace(pool_cls=pool))
    assert start.called is in_main_process
