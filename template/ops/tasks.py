from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from .broker import REPLY_QUEUE_OPTIONS
from .models import DeadLetter


@shared_task(bind=True, ignore_result=True, acks_late=False)
def ping(self, reply_to: str, queue: str) -> None:
    """Answer `manage.py celery_healthcheck` on the broker queue `reply_to`.

    The reply travels through the broker itself, so it works without a result
    backend. acks_late is off: a lost ping only makes the check fail, as it should.
    """
    delivery = self.request.delivery_info or {}
    reply = {
        "queue": queue,
        "node": self.request.hostname,
        "routing_key": delivery.get("routing_key"),
    }
    with (
        self.app.connection_for_write() as connection,
        connection.SimpleQueue(reply_to, **REPLY_QUEUE_OPTIONS) as replies,
    ):
        replies.put(reply)


@shared_task
def purge_dead_letters(days: int = 30) -> int:
    """Delete dead letters older than `days`; scheduled daily by beat."""
    cutoff = timezone.now() - timedelta(days=days)
    deleted, _ = DeadLetter.objects.filter(created_at__lt=cutoff).delete()
    return deleted
