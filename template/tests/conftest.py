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
    .get() re-raises them. The broker goes through the environment because
    Celery reads CELERY_BROKER_URL from it before its own settings.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CELERY_BROKER_URL", "memory://")
        patch.setitem(celery_app.conf, "task_always_eager", True)
        yield


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


@pytest.fixture
def staff_client(client, django_user_model):
    """A client logged in as a user of the site (reports:create needs a login)."""
    user = django_user_model.objects.create_user("staff", password="x" * 20)
    client.force_login(user)
    return client
