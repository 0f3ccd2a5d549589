"""ops/liveness.py: the beats that systemd's watchdog and the containers'
liveness checks watch."""

import os
import socket
from types import SimpleNamespace

import pytest

from config.celery import app
from ops.liveness import Liveness, notify


class Timer:
    """The consumer's timer: remembers what it was asked to repeat."""

    def __init__(self):
        self.calls = []
        self.cancelled = False

    def call_repeatedly(self, interval, function):
        self.calls.append((interval, function))
        return SimpleNamespace(cancel=lambda: setattr(self, "cancelled", True))


@pytest.fixture
def systemd(tmp_path, monkeypatch):
    """A NOTIFY_SOCKET, as systemd gives a unit's main process."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(1)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield server


def test_the_worker_runs_the_step():
    assert Liveness in app.steps["consumer"]


def test_notify_sends_to_systemds_socket(systemd):
    assert notify(b"WATCHDOG=1")
    assert systemd.recv(64) == b"WATCHDOG=1"


def test_notify_without_a_socket_sends_nothing(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not notify(b"WATCHDOG=1")


def test_each_beat_touches_the_file_and_pings_the_watchdog(systemd, tmp_path, monkeypatch):
    alive = tmp_path / "worker-alive"
    monkeypatch.setenv("WORKER_LIVENESS_FILE", str(alive))
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    step, timer = Liveness(SimpleNamespace()), Timer()
    step.start(SimpleNamespace(timer=timer))
    assert alive.exists()
    assert systemd.recv(64) == b"WATCHDOG=1"
    # Twice per watchdog period.
    ((interval, beat),) = timer.calls
    assert interval == 2.0
    alive.unlink()
    beat()
    assert alive.exists()
    assert systemd.recv(64) == b"WATCHDOG=1"
    step.stop(SimpleNamespace(timer=timer))
    assert timer.cancelled


def test_no_beats_for_another_process_watchdog_and_no_file(systemd, monkeypatch):
    monkeypatch.delenv("WORKER_LIVENESS_FILE", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    step, timer = Liveness(SimpleNamespace()), Timer()
    step.start(SimpleNamespace(timer=timer))
    assert timer.calls == []
