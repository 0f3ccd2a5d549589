import importlib
import io
import os
import socket
import subprocess
import sys
import time
from types import SimpleNamespace
from unittest import mock

import pytest
from django.urls import reverse
from kombu.exceptions import OperationalError
from prometheus_client import REGISTRY

from ops import checks, metrics
from reports.tasks import render_report

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def recording(settings):
    """Record as a process with METRICS_PORT set does."""
    settings.METRICS_PORT = 9808
    metrics.connect()


def sample(metric: str, **labels) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


def task_labels(task) -> dict:
    return {"name": task.name, "queue": ""}  # eager tasks come from no queue


def test_a_task_that_returns_is_counted_and_timed(report):
    labels = task_labels(render_report)
    before = {
        name: sample(name, **labels)
        for name in ("celery_task_started_total", "celery_task_succeeded_total")
    }
    timed = sample("celery_task_runtime_seconds_count", **labels, state="success")
    render_report.delay(report.pk).get()
    assert sample("celery_task_started_total", **labels) == before["celery_task_started_total"] + 1
    succeeded = before["celery_task_succeeded_total"] + 1
    assert sample("celery_task_succeeded_total", **labels) == succeeded
    assert sample("celery_task_runtime_seconds_count", **labels, state="success") == timed + 1


def test_a_failure_is_dead_lettered_once():
    """ops/base.py and the task_failure handler both store the dead letter: one count."""
    labels = task_labels(render_report)
    failed = sample("celery_task_failed_total", **labels)
    dead = sample("celery_task_dead_lettered_total", **labels)
    result = render_report.delay(987654321)
    with pytest.raises(Exception, match="does not exist"):
        result.get()
    assert sample("celery_task_failed_total", **labels) == failed + 1
    assert sample("celery_task_dead_lettered_total", **labels) == dead + 1


def test_a_worker_shows_each_task_at_zero_before_it_runs():
    """So that the first failure is an increase that rate() and alerts see."""
    from config.celery import app

    metrics.known_from_zero(app, ["zero-queue"])
    for name in (render_report.name, "ops.tasks.purge_dead_letters"):
        for counter in ("celery_task_failed_total", "celery_task_dead_lettered_total"):
            assert REGISTRY.get_sample_value(counter, {"name": name, "queue": "zero-queue"}) == 0.0
    chord_unlock = {"name": "celery.chord_unlock", "queue": "zero-queue"}  # Celery's own
    assert REGISTRY.get_sample_value("celery_task_failed_total", chord_unlock) is None


@pytest.mark.parametrize("port", [9808, None], ids=["metrics on", "metrics off"])
def test_a_503_for_a_broker_outage_is_counted_by_view(staff_client, settings, port):
    settings.METRICS_PORT = port
    before = sample("web_task_enqueue_failures_total", view="create_report")
    with mock.patch("reports.views.ensure_broker", side_effect=OperationalError("refused")):
        response = staff_client.post(
            reverse("reports:create"), {"title": "Hi", "recipient": "a@b.co"}, secure=True
        )
    assert response.status_code == 503
    counted = sample("web_task_enqueue_failures_total", view="create_report") - before
    assert counted == (1 if port else 0)


def test_every_publish_is_stamped_and_a_countdown_counts_from_its_end():
    headers = {}
    metrics.stamp(headers=headers)
    assert time.time() - headers[metrics.SENT_AT] < 5
    sent = SimpleNamespace(eta=None, sent_at=100.0)
    assert metrics._publish_time(sent) == 100.0
    delayed = SimpleNamespace(eta="2030-01-01T00:00:00+00:00", sent_at=100.0)
    assert metrics._publish_time(delayed) == 1893456000.0


def test_beat_marks_when_it_sent_each_schedule():
    headers = {"periodic_task_name": "nightly report"}
    metrics.count_sent(sender="reports.tasks.render_report", headers=headers, routing_key="render")
    sent = sample("celery_beat_last_sent_timestamp_seconds", schedule="nightly report")
    assert time.time() - sent < 5


class Connection:
    """The accepted socket gunicorn puts in the WSGI environ."""

    def __init__(self, port: int):
        self.port = port

    def getsockname(self):
        return ("127.0.0.1", self.port)


def call(application, port: int, path: str) -> tuple[str, bytes]:
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "HTTP_HOST": "testserver",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "gunicorn.socket": Connection(port),
    }
    replies = []
    body = b"".join(application(environ, lambda status, headers: replies.append(status)))
    return replies[0], body


def test_metrics_answer_on_their_listener_only(settings):
    """gunicorn.conf.py adds the listener; the site's never serves /metrics."""
    settings.ALLOWED_HOSTS = ["testserver"]
    settings.SECURE_SSL_REDIRECT = False
    wsgi = importlib.reload(importlib.import_module("config.wsgi"))
    status, body = call(wsgi.application, 9808, "/metrics")
    assert status.startswith("200")
    assert b"celery_broker_up" in body
    status, body = call(wsgi.application, 8000, "/metrics")
    assert status.startswith("404")
    assert b"celery_broker_up" not in body


def test_a_metrics_directory_set_too_late_is_refused(monkeypatch, tmp_path):
    """As when .env sets it: prometheus_client was imported without it (ops.E003)."""
    assert [e.id for e in checks.check_metrics_directory(None)] == []
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert [e.id for e in checks.check_metrics_directory(None)] == ["ops.E003"]


def test_a_taken_metrics_port_is_reported_and_the_process_runs_on(settings, caplog):
    """A worker whose port is taken still runs its tasks: it logs why it has no metrics."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings.METRICS_ADDRESS, settings.METRICS_PORT = taken.getsockname()
        metrics.serve()
    assert "cannot listen on 127.0.0.1:" in caplog.text
    assert "running without metrics" in caplog.text


def test_a_process_that_only_sends_makes_the_metrics_directory(tmp_path):
    """A shell or cron job with the service's environment, started before the
    service made the directory: its counts are kept, nothing raises."""
    directory = tmp_path / "not-yet"
    code = (
        "import django; django.setup()\n"
        "from ops import metrics\n"
        "assert metrics.multiprocess_mode()\n"
        "metrics.count_sent(sender='reports.tasks.render_report', routing_key='default')\n"
    )
    env = {**os.environ, "METRICS_PORT": "9808", "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)  # noqa: S603  (a fixed command line)
    assert [path.name.split("_")[0] for path in directory.iterdir()] == ["counter"]
