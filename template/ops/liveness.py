"""Proof of life of a worker's consumer, for the deployment's liveness check.

A worker whose main process hangs (stopped, deadlocked, stuck in a call
without a timeout) keeps its pid and its pool: only its event loop stops. This
consumer bootstep beats from that event loop, every few seconds while the
worker consumes, and never from a thread of its own:

- it touches the file named by WORKER_LIVENESS_FILE, whose age the Kubernetes
  livenessProbe and the compose healthcheck test;
- under a systemd unit with WatchdogSec=, it sends WATCHDOG=1, and systemd
  restarts a unit whose pings stop:
  https://www.freedesktop.org/software/systemd/man/latest/sd_notify.html

No beats while the consumer reconnects either: a worker that cannot reach its
broker for longer than the check allows is restarted, and waits for it again.
config/celery.py adds the step; docs/reliability.md, "Liveness", has the rest.
"""

import logging
import os
import socket
from pathlib import Path

from celery import bootsteps

logger = logging.getLogger(__name__)

# Seconds between beats; the checks allow 60 s without one.
INTERVAL = 10.0


def notify(message: bytes) -> bool:
    """Send `message` to systemd's notification socket, if this process has one."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.sendto(message, address)
    return True


class Liveness(bootsteps.StartStopStep):
    """Beats from the consumer's event loop while it consumes."""

    # Start once the worker consumes its queues.
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        file = os.environ.get("WORKER_LIVENESS_FILE")
        self.file = Path(file) if file else None
        # systemd sets WATCHDOG_USEC (and WATCHDOG_PID, the main process) for a
        # unit with WatchdogSec=; the rules of sd_watchdog_enabled(3).
        period = int(os.environ.get("WATCHDOG_USEC") or 0) / 1e6
        pid = str(os.getpid())
        self.watchdog = period > 0 and os.environ.get("WATCHDOG_PID", pid) == pid
        # Ping at least twice per watchdog period, as sd_watchdog_enabled(3) advises.
        self.interval = min(INTERVAL, period / 2) if self.watchdog else INTERVAL
        self.timer = None

    def start(self, parent):
        if self.file or self.watchdog:
            self.beat()
            self.timer = parent.timer.call_repeatedly(self.interval, self.beat)

    def stop(self, parent):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def beat(self):
        try:
            if self.file:
                self.file.touch()
            if self.watchdog:
                notify(b"WATCHDOG=1")
        except OSError:
            logger.exception("Could not report this worker alive")
