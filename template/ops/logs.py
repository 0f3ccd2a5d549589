"""What every log record says about where it comes from, in web and worker alike.

- request_id: the web request being served, or the one that sent the task
  being run. RequestId keeps the X-Request-ID the proxy sends (or makes one)
  and sends it back; tasks carry it in a message header.
- task_id, task_name and queue: the task being run.
- trace_id: the OpenTelemetry trace, when tracing is on (ops/tracing.py).

Fields are "" where they do not apply. DJANGO_LOG_FORMAT=json writes each
record as one JSON object per line (config/settings.py, gunicorn.conf.py).
"""

import contextvars
import logging
import re
import uuid

from celery import current_task, signals

from . import tracing

HEADER = "X-Request-ID"
# What a request id may look like: a proxy's, or ours (uuid4 hex). Anything
# else is replaced, so that a client cannot write what it likes into the logs.
VALID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

# The JSON lines: Python's names for the standard fields, renamed, then every
# field a filter or an `extra=` adds. https://nhairs.github.io/python-json-logger/
JSON_FORMATTER = {
    "()": "pythonjsonlogger.json.JsonFormatter",
    "fmt": ["asctime", "levelname", "name", "processName", "message"],
    "rename_fields": {
        "asctime": "time",
        "levelname": "level",
        "name": "logger",
        "processName": "process",
    },
}


class Context(logging.Filter):
    """Adds request_id, task_id, task_name and queue to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        task = current_task._get_current_object() if current_task else None
        request = task.request if task is not None else None
        record.request_id = REQUEST_ID.get() or getattr(request, "request_id", None) or ""
        if record.name == "gunicorn.access" and isinstance(record.args, dict):
            # Written once the response is gone: the id it carried (gunicorn's atom).
            record.request_id = record.args.get("{x-request-id}o", "")
        record.task_id = getattr(request, "id", None) or ""
        record.task_name = task.name if task is not None else ""
        record.queue = ((getattr(request, "delivery_info", None) or {}).get("routing_key")) or ""
        record.trace_id = trace_id()
        return True


def trace_id() -> str:
    if not tracing.enabled():
        return ""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else ""


class RequestId:
    """Middleware: the request's id, for its log records, its tasks and its response."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        given = request.headers.get(HEADER, "")
        request.id = given if VALID.fullmatch(given) else uuid.uuid4().hex
        token = REQUEST_ID.set(request.id)
        try:
            response = self.get_response(request)
        finally:
            REQUEST_ID.reset(token)
        response[HEADER] = request.id
        return response


@signals.before_task_publish.connect(weak=False, dispatch_uid="ops.logs.carry_request_id")
def carry_request_id(headers=None, **kwargs):
    """A task sent while serving a request, or by a task that was, carries its id."""
    if headers is not None and (request_id := REQUEST_ID.get()):
        headers.setdefault("request_id", request_id)


# Per task id: how to undo adopt_request_id once the task ends.
_adopted: dict[str, contextvars.Token] = {}


@signals.task_prerun.connect(weak=False, dispatch_uid="ops.logs.adopt_request_id")
def adopt_request_id(task_id=None, task=None, **kwargs):
    """The tasks a task sends carry on its request id (retries included)."""
    if request_id := getattr(task.request, "request_id", None):
        _adopted[task_id] = REQUEST_ID.set(request_id)


@signals.task_postrun.connect(weak=False, dispatch_uid="ops.logs.drop_request_id")
def drop_request_id(task_id=None, **kwargs):
    if (token := _adopted.pop(task_id, None)) is not None:
        REQUEST_ID.reset(token)
