"""A fix to Celery's prefork pool, until Celery has its own (celery/celery#9250).

A pool process that exits is untracked at once (AsynPool._untrack_child_process
sets its `_sentinel_poll` to None), but it leaves the pool's list of processes
only at the pool's next maintenance. When the consumer restarts in between,
after a lost broker connection, it registers the pool with the event loop
again; tracking that process hands None to the event loop, and the worker
stops on "Unrecoverable error: ValueError('file descriptor is None')". Losing
the connection makes this likely: CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS
ends the processes running tasks at that very moment. The template's
silent-connection test on RabbitMQ 4.3 met it once in about ten runs.

The process is gone: this skips it, and the pool's maintenance replaces it as
usual. config/celery.py imports this module.
https://github.com/celery/celery/issues/9250
"""

from celery.concurrency.asynpool import AsynPool

_track_child_process = AsynPool._track_child_process


def track_child_process(self, proc, hub):
    if getattr(proc, "_sentinel_poll", 0) is None:
        return  # exited and untracked already
    _track_child_process(self, proc, hub)


AsynPool._track_child_process = track_child_process
