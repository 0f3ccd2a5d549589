"""ops/shutdown.py: the deadline that bounds a worker's shutdown."""

import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from config.celery import app
from ops import shutdown
from ops.shutdown import ShutdownDeadline


def worker(processes, time_limit=0.2):
    """A prefork worker as the step sees it: billiard's pool and its processes."""
    pool = SimpleNamespace(_pool=SimpleNamespace(_pool=processes))
    return SimpleNamespace(pool=pool, time_limit=time_limit)


def process(child, reaped=False):
    """billiard's Process for `child`; Pool.join sets its returncode once it reaped it."""
    return SimpleNamespace(pid=child.pid, _popen=SimpleNamespace(returncode=0 if reaped else None))


@pytest.fixture
def children():
    """children(code) -> a child process running `code`, by default a 60 s sleep."""
    started = []

    def _start(code="import time; time.sleep(60)"):
        started.append(subprocess.Popen([sys.executable, "-c", code]))  # noqa: S603  (a fixed command line)
        return started[-1]

    yield _start
    for child in started:
        child.kill()
        child.wait()


@pytest.fixture(autouse=True)
def short_grace(monkeypatch):
    monkeypatch.setattr(shutdown, "GRACE", 0.1)


def run_to_deadline(processes):
    step = ShutdownDeadline(SimpleNamespace())
    step.close(worker(processes))
    step.timer.join(10)


def test_the_worker_runs_the_step():
    assert ShutdownDeadline in app.steps["worker"]


def test_processes_still_running_at_the_deadline_are_killed(children, caplog):
    running, reaped = children(), children()
    run_to_deadline([process(running), process(reaped, reaped=True)])
    assert running.wait(10) == -9
    # A process the pool has reaped is left alone: its pid may be another's now.
    assert reaped.poll() is None
    assert f"pool processes [{running.pid}]" in caplog.text


@pytest.mark.skipif(not hasattr(os, "waitid"), reason="no waitid (macOS)")
def test_a_process_that_exited_unreaped_is_neither_killed_nor_named(children, caplog):
    running, exited = children(), children("pass")
    flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
    while os.waitid(os.P_PID, exited.pid, flags) is None:  # exited, left for its parent
        time.sleep(0.05)
    run_to_deadline([process(exited), process(running)])
    assert exited.wait(10) == 0
    assert f"pool processes [{running.pid}]" in caplog.text


def test_no_deadline_without_a_prefork_pool_or_a_time_limit():
    step = ShutdownDeadline(SimpleNamespace())
    step.close(SimpleNamespace(pool=SimpleNamespace(_pool=None), time_limit=300))  # threads pool
    step.close(worker([], time_limit=None))
    assert step.timer is None
