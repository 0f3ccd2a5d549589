import io
import json
import logging
import logging.config

import pytest
from django.conf import settings

from ops.logs import HEADER, REQUEST_ID
from reports.tasks import render_report

pytestmark = pytest.mark.django_db


@pytest.fixture
def json_lines():
    """The console handler of the settings' LOGGING, JSON formatter, into a buffer."""
    stream = io.StringIO()
    config = settings.LOGGING
    handler = logging.StreamHandler(stream)
    formatter = logging.config.DictConfigurator({}).configure_formatter(
        dict(config["formatters"]["json"])
    )
    handler.setFormatter(formatter)
    handler.addFilter(
        logging.config.DictConfigurator({}).configure_filter(dict(config["filters"]["context"]))
    )
    root = logging.getLogger()
    root.addHandler(handler)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.removeHandler(handler)


def test_a_request_keeps_the_proxys_id_and_sends_it_back(client):
    response = client.get("/healthz/", headers={HEADER: "edge-4f2a.17"})
    assert response[HEADER] == "edge-4f2a.17"


def test_a_request_without_a_valid_id_gets_one(client):
    made = client.get("/healthz/")[HEADER]
    assert len(made) == 32
    replaced = client.get("/healthz/", headers={HEADER: "x\n{forged}"})[HEADER]
    assert replaced != "x\n{forged}" and len(replaced) == 32


def test_a_task_logs_its_id_name_queue_and_the_request_that_sent_it(json_lines):
    token = REQUEST_ID.set("req-test-1")
    try:
        result = render_report.delay(987654321)  # fails: its records say which task
    finally:
        REQUEST_ID.reset(token)
    with pytest.raises(Exception, match="does not exist"):
        result.get()
    records = [r for r in json_lines() if r.get("task_id") == result.id]
    assert records, json_lines()
    for record in records:
        assert record["task_name"] == "reports.tasks.render_report"
        assert record["request_id"] == "req-test-1"
        assert {"time", "level", "logger", "process", "message", "queue"} <= set(record)
