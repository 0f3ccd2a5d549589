"""A deadline on a worker's shutdown: the hard time limit plus GRACE seconds.

A warm shutdown (SIGTERM) stops consuming, lets the running tasks finish, and
waits for the pool's processes to exit, without a timeout (billiard's
Pool.join). The hard time limit bounds the tasks but not that wait. A task
handed to a pool process just before the shutdown, whose start the main
process had not read yet, is dropped from the pool's books (Celery's
AsynPool.flush) but still runs, with no time limit, since the limits are armed
when the main process reads the start. When it ends, its process waits 30 s
for the main process to read its result (billiard's
Worker._ensure_messages_consumed), but the main process stopped reading once
its books were empty. The worker then exits 30 s late, or later, or the stop
timeout of the deployment kills it.

Nothing is lost that way: the dropped task was never acknowledged, so its
message goes back to the queue and runs again (tasks are idempotent). This
worker step bounds the wait: the pool processes still alive the hard time
limit plus GRACE seconds after the shutdown began are killed. By then every
task running at the SIGTERM has ended or hit its hard time limit; what is left
is such a dropped task or a process waiting for a reader that is gone. The
worker then ends its shutdown as usual (acknowledgements, disconnection) and
exits 0, well within the stop timeouts of the deploy files (the hard time limit
plus 30 s or more).
"""

import contextlib
import logging
import os
import signal
import threading

from celery import bootsteps

logger = logging.getLogger(__name__)

# Seconds past the hard time limit. During the shutdown a hard limit fires
# within 0.5 s (celery's prefork on_stop timer thread), and the process it
# ends exits within about a second.
GRACE = 5.0


class ShutdownDeadline(bootsteps.StartStopStep):
    """Kills the pool processes a shutdown still waits for at its deadline."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.timer = None

    def close(self, parent):
        """The first step of every shutdown, warm or cold: arm the deadline."""
        pool = getattr(parent.pool, "_pool", None)  # billiard's pool: prefork only
        if pool is None or not parent.time_limit or self.timer is not None:
            return
        # CELERY_TASK_TIME_LIMIT, as the stop timeouts of the deploy files: a task
        # given a longer limit of its own is cut short at a shutdown either way.
        deadline = parent.time_limit + GRACE
        self.timer = threading.Timer(deadline, self.kill, (pool, deadline))
        self.timer.daemon = True
        self.timer.start()

    def kill(self, pool, deadline):
        running = [p for p in list(pool._pool) if is_running(p)]  # a copy: join may remove some
        if not running:
            return
        logger.warning(
            "Shutdown still waiting for pool processes %s after %.0f s (hard time limit + %.0f s): "
            "killing them; a task they hold is unacknowledged and goes back to the queue",
            [p.pid for p in running], deadline, GRACE,
        )  # fmt: skip
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)


def is_running(process) -> bool:
    """Whether a pool process has not exited yet; never one Pool.join has reaped,
    whose pid may be another process's by now."""
    if process._popen is None or process._popen.returncode is not None:
        return False  # never started, or reaped
    if not hasattr(os, "waitid"):  # macOS
        return True
    try:
        # WNOWAIT: an exited process stays for Pool.join to reap.
        exited = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # reaped meanwhile
        return False
    return exited is None
