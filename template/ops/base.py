"""The base class of every task (config/celery.py): a failure is acknowledged
only once its dead letter is stored.

Tasks are acknowledged late, and Celery acknowledges a failed task as well
(task_acks_on_failure_or_timeout): the broker then deletes its message, and
ops/signals.py's DeadLetter row is all that is left of it. A worker cut off its
network fails the tasks it runs *because* it cannot reach the database, so
that row cannot be written either; Redis accepts the acknowledgement as soon
as the network is back, and the task is gone without a trace.
(RabbitMQ drops an acknowledgement sent on a connection it has lost, and
requeues the message instead.)

So a task writes its dead letter itself, before Celery acknowledges the
failure. If that write fails, the task rejects its message with requeue
instead: the broker gives it back now, or (unreachable) after the visibility
timeout or on the connection's loss, and the task runs again. Tasks are
idempotent, so that run is harmless. The task_failure handler, which also
covers failures outside the task (hard time limit), finds the row and adds
nothing. https://docs.celeryq.dev/en/stable/userguide/tasks.html#reject
"""

import logging

from billiard.einfo import ExceptionInfo
from celery.contrib.django.task import DjangoTask
from celery.exceptions import Reject, TaskPredicate

logger = logging.getLogger(__name__)


class Task(DjangoTask):
    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except TaskPredicate:  # Retry, Ignore, Reject: not failures
            raise
        except Exception as exc:
            request = self.request
            if not self.acks_late or request.called_directly or request.is_eager:
                raise  # no message to keep: acknowledged already, or none
            from .signals import record_dead_letter  # imports the models

            try:
                record_dead_letter(
                    sender=self, task_id=request.id, exception=exc,
                    args=args, kwargs=kwargs, einfo=ExceptionInfo(),
                )  # fmt: skip
            except Exception as error:
                logger.warning(
                    "%s[%s] failed with %r and its dead letter cannot be stored (%r): requeued",
                    self.name, request.id, exc, error,
                )  # fmt: skip
                raise Reject(exc, requeue=True) from exc
            raise
