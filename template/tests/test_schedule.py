import importlib
from unittest import mock

import pytest
from django.apps import apps
from django.conf import settings
from django_celery_beat.models import PeriodicTask

pytestmark = pytest.mark.django_db

seeding = importlib.import_module("ops.migrations.0002_periodic_schedule")


def test_the_migration_seeds_the_schedule():
    task = PeriodicTask.objects.get(name=seeding.SCHEDULE_NAME)
    assert task.task == "ops.tasks.purge_dead_letters"
    assert task.enabled
    assert (task.crontab.minute, task.crontab.hour) == ("0", "3")
    assert str(task.crontab.timezone) == settings.CELERY_TIMEZONE


def test_seeding_again_keeps_the_admin_edits():
    PeriodicTask.objects.filter(name=seeding.SCHEDULE_NAME).update(enabled=False)
    seeding.seed_schedule(apps, None)
    task = PeriodicTask.objects.get(name=seeding.SCHEDULE_NAME)
    assert task.enabled is False
    assert PeriodicTask.objects.filter(name=seeding.SCHEDULE_NAME).count() == 1


def test_the_seeded_task_is_registered():
    from config.celery import app

    app.loader.import_default_modules()
    task = PeriodicTask.objects.get(name=seeding.SCHEDULE_NAME)
    assert task.task in app.tasks


def test_beat_leaves_on_sigterm_without_saving_inside_the_handler():
    """A save from inside the handler can deadlock on the query it interrupted."""
    import signal

    from celery.signals import beat_init

    service = mock.Mock()
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        beat_init.send(sender=service)
        for signum in before:
            with pytest.raises(SystemExit):
                signal.getsignal(signum)(signum, None)
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
    service.sync.assert_not_called()
    service.scheduler.close.assert_not_called()
