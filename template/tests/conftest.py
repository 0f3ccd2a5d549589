import pytest
from django.contrib.staticfiles.storage import StaticFilesStorage

from config.celery import app as celery_app
from reports.models import Report


@pytest.fixture(autouse=True, scope="session")
def celery_eager():
    """Run tasks in-process (eager) against an in-memory broker.

    Eager mode runs retries and canvases synchronously; the in-memory broker
    carries celery_healthcheck's replies. Errors are not propagated from
    inside the task, so failure signals fire as in a worker: the result's
    .get() re-raises them.
    """
    saved = {key: celery_app.conf[key] for key in ("broker_url", "task_always_eager")}
    celery_app.conf.update(broker_url="memory://", task_always_eager=True)
    yield
    celery_app.conf.update(saved)


@pytest.fixture(autouse=True)
def plain_static_storage(settings):
    """The manifest storage needs collectstatic; tests render without it."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": f"{StaticFilesStorage.__module__}.StaticFilesStorage"},
    }


@pytest.fixture
def report(db):
    return Report.objects.create(title="Quarterly numbers", recipient="ceo@example.com")
