from datetime import timedelta
from unittest import mock

import pytest
from celery.exceptions import Reject
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError
from django.test import override_settings
from django.utils import timezone
from kombu.exceptions import OperationalError

from ops import checks, tasks
from ops.models import DeadLetter

pytestmark = pytest.mark.django_db


def test_healthcheck_gets_a_reply_from_every_queue(settings, capsys):
    call_command("celery_healthcheck", "--timeout", "5")
    out = capsys.readouterr().out
    for queue in settings.CELERY_TASK_QUEUES:
        assert f"{queue.name}  " in out
    assert out.count(" ok ") == len(settings.CELERY_TASK_QUEUES)


def test_healthcheck_checks_only_the_named_queue(settings, capsys):
    first = settings.CELERY_TASK_QUEUES[0].name
    call_command("celery_healthcheck", "--queue", first, "--timeout", "5")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(first)


def test_healthcheck_fails_when_a_queue_does_not_answer(capsys):
    with (
        mock.patch.object(tasks.ping, "apply_async"),
        pytest.raises(CommandError, match="no reply"),
    ):
        call_command("celery_healthcheck", "--timeout", "0.5")
    assert "TIMEOUT" in capsys.readouterr().out


def test_healthcheck_rejects_an_unknown_queue():
    with pytest.raises(CommandError, match="unknown queue"):
        call_command("celery_healthcheck", "--queue", "no-such-queue")


def test_healthz_reports_ok(client):
    with mock.patch("ops.views.ensure_broker"):
        response = client.get("/healthz/", secure=True)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}


def test_healthz_reports_a_broker_outage(client):
    with mock.patch("ops.views.ensure_broker", side_effect=OperationalError("refused")):
        response = client.get("/healthz/", secure=True)
    assert response.status_code == 503
    assert response.json()["checks"]["broker"] == "unavailable"


def test_the_broker_check_tries_each_node_of_a_failover_list_once(monkeypatch):
    """One node down must not make /healthz/ fail: ensure_broker() goes on to the
    next node of a failover list (`;`), without a pause, and gives up after the last."""
    from kombu import Connection

    from ops.broker import ensure_broker

    nodes = ["node-1", "node-2", "node-3"]
    monkeypatch.setenv("CELERY_BROKER_WRITE_URL", ";".join(f"memory://{node}//" for node in nodes))
    tried = []

    def refuse(connection):
        tried.append(connection.hostname)
        raise connection.recoverable_connection_errors[0]("refused")

    monkeypatch.setattr(Connection, "_establish_connection", refuse)
    with pytest.raises(OperationalError):
        ensure_broker()
    assert tried == nodes


def test_a_503_does_not_mail_the_admins_but_a_500_does(client, mailoutbox, settings):
    settings.ADMINS = [("Ops", "ops@example.com")]
    with mock.patch("ops.views.ensure_broker", side_effect=OperationalError("refused")):
        assert client.get("/healthz/", secure=True).status_code == 503
    assert mailoutbox == []
    client.raise_request_exception = False
    with mock.patch("ops.views.JsonResponse", side_effect=RuntimeError("a bug")):
        assert client.get("/healthz/", secure=True).status_code == 500
    assert [mail.to for mail in mailoutbox] == [["ops@example.com"]]


def test_failed_task_is_recorded_once_as_a_dead_letter():
    @tasks.shared_task(name="tests.always_fails")
    def always_fails(x):
        raise ValueError("bad data")

    for _ in range(2):
        with pytest.raises(ValueError):
            always_fails.apply(args=[1], task_id="fixed-id").get()
    letter = DeadLetter.objects.get()
    assert (letter.task_id, letter.task_name, letter.args) == (
        "fixed-id",
        "tests.always_fails",
        [1],
    )
    assert "bad data" in letter.exception


def test_failure_whose_dead_letter_cannot_be_stored_is_requeued():
    """A worker cut off its network fails its tasks and cannot store their dead
    letters: the task must come back (ops/base.py), not be acknowledged."""

    @tasks.shared_task(name="tests.fails_offline")
    def fails_offline():
        raise DatabaseError("the database is unreachable")

    offline = DatabaseError("still unreachable")
    # As a worker runs it: a delivered message, not a direct or eager call.
    fails_offline.push_request(id="offline-id", called_directly=False, is_eager=False)
    try:
        with (
            mock.patch.object(DeadLetter.objects, "get_or_create", side_effect=offline),
            pytest.raises(Reject) as rejected,
        ):
            fails_offline()
    finally:
        fails_offline.pop_request()
    assert rejected.value.requeue
    assert fails_offline.apply(task_id="offline-id").state == "FAILURE"
    assert DeadLetter.objects.get().task_id == "offline-id"


def test_purge_dead_letters_keeps_recent_ones():
    old = DeadLetter.objects.create(task_id="old", task_name="t", exception="e")
    DeadLetter.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=31))
    DeadLetter.objects.create(task_id="new", task_name="t", exception="e")
    assert tasks.purge_dead_letters.delay().get() == 1
    assert list(DeadLetter.objects.values_list("task_id", flat=True)) == ["new"]


def test_visibility_timeout_check_passes_as_configured():
    assert checks.check_visibility_timeout(None) == []


@override_settings(
    CELERY_BROKER_TRANSPORT_OPTIONS={"visibility_timeout": 60},
    CELERY_TASK_TIME_LIMIT=300,
)
def test_visibility_timeout_check_catches_a_timeout_below_the_time_limit():
    errors = checks.check_visibility_timeout(None)
    assert [error.id for error in errors] == ["ops.E001"]


def test_retry_delay_check_passes_as_configured():
    assert checks.check_retry_delays(None) == []


@override_settings(TASK_MAX_COUNTDOWN=60)
def test_retry_delay_check_catches_a_countdown_cap_below_a_retry_delay():
    errors = checks.check_retry_delays(None)
    assert errors
    assert {error.id for error in errors} == {"ops.E002"}
    assert "reports.tasks.email_report" in {error.obj for error in errors}
