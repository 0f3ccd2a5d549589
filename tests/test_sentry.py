"""Sentry, end to end, in a booted `use_sentry` project with Redis results.

A local HTTP server stands in for Sentry: it accepts the SDK's envelopes
(POST /api/<project>/envelope/) and keeps every item. SENTRY_DSN points at it.
The project copy gets the test-only `sentrylab` app (tests/fixtures/sentrylab):
a task that fails for good, one that retries and then succeeds, one for beat,
and a view that raises. The worker and beat run from the Procfile's own lines,
the web from compose.yaml's gunicorn command line.

The SDK sends from a background thread, so every wait for an item is a bounded
poll; a warm shutdown flushes each prefork child (the CeleryIntegration wraps
billiard's workloop), which is when the absence of an event can be asserted.

The same booted project proves Redis result expiry: the key of a stored result
carries a TTL equal to CELERY_RESULT_EXPIRES.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import shutil
import textwrap
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from helpers import (
    POSTGRES,
    REDIS,
    ROOT,
    free_port,
    once_per_run,
    postgres_database,
    procfile,
    project_env,
    redis_database,
    render,
    require,
    run,
    start,
    wait_for_port,
)

ANSWERS = {"result_backend": "redis", "use_sentry": True, "queues": "default:2"}
SENTRYLAB = ROOT / "tests" / "fixtures" / "sentrylab"
ENVIRONMENT = "sentry-boot-test"
TICK = "sentrylab tick"
WAIT = 60.0

pytestmark = [pytest.mark.boot, pytest.mark.xdist_group("boot-sentry")]


# --- A stand-in for Sentry's ingestion endpoint --------------------------------


def parse_envelope(body: bytes) -> tuple[dict, list[tuple[dict, bytes]]]:
    """(envelope header, [(item header, payload)]) of an envelope.

    https://develop.sentry.dev/sdk/data-model/envelopes/: a header line, then
    per item a header line and a payload, `length` bytes long or up to the
    next newline.
    """
    header_line, _, rest = body.partition(b"\n")
    items = []
    while rest.strip():
        item_line, _, rest = rest.partition(b"\n")
        item = json.loads(item_line)
        if "length" in item:
            payload, rest = rest[: item["length"]], rest[item["length"] :].removeprefix(b"\n")
        else:
            payload, _, rest = rest.partition(b"\n")
        items.append((item, payload))
    return json.loads(header_line), items


class SentryServer:
    """Accepts envelopes on 127.0.0.1 and keeps (project, header, item, payload)."""

    def __init__(self):
        self.received: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                match = re.fullmatch(r"/api/(\d+)/envelope/", self.path)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if not match:
                    self.send_error(404)
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                elif self.headers.get("Content-Encoding"):
                    # The SDK compresses with gzip unless brotli is installed.
                    self.send_error(415, f"cannot decode {self.headers['Content-Encoding']}")
                    return
                header, items = parse_envelope(body)
                with server.lock:
                    for item, payload in items:
                        server.received.append(
                            {
                                "project": match[1],
                                "envelope": header,
                                "type": item["type"],
                                "payload": json.loads(payload) if item["type"] in ("event", "check_in") else payload,
                            }
                        )
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.dsn = f"http://public-key@127.0.0.1:{self.port}/1"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def items(self, kind: str) -> list[dict]:
        with self.lock:
            return [entry["payload"] for entry in self.received if entry["type"] == kind]

    def wait_for(self, kind: str, predicate, timeout: float = WAIT) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [payload for payload in self.items(kind) if predicate(payload)]
            if found:
                return found[0]
            time.sleep(0.2)
        raise AssertionError(f"no matching {kind} after {timeout} s; received: {self.summary()}")

    def summary(self) -> list:
        with self.lock:
            return [(entry["type"], exception_types(entry["payload"])) for entry in self.received]


def exception_types(event) -> list[str]:
    if not isinstance(event, dict):
        return []
    return [value["type"] for value in event.get("exception", {}).get("values", [])]


# --- The booted project --------------------------------------------------------


class Lab:
    def __init__(self, project, env, logdir, sentry):
        self.project, self.env, self.logdir, self.sentry = project, env, logdir, sentry
        self.services = {}

    def manage(self, *args, env=None):
        return run(["python", "manage.py", *args], self.project, env or self.env, timeout=300)

    def shell(self, code, env=None) -> str:
        """Run `code` in `manage.py shell`; returns the last line it printed."""
        return self.manage("shell", "-c", textwrap.dedent(code), env=env).stdout.strip().splitlines()[-1]

    def send(self, task: str, env=None) -> str:
        return self.shell(f"from sentrylab.tasks import {task}; print({task}.delay().id)", env=env)

    def start(self, name, command, env=None):
        """Start a command through sh, as honcho does (`exec` keeps it the main process)."""
        service = start(name, ["sh", "-c", f"exec {command}"], self.project, env or self.env, self.logdir)
        self.services[name] = service
        return service

    def start_worker(self, name="worker-default", env=None):
        worker = self.start(name, procfile(self.project)["worker-default"], env=env)
        worker.wait_for_log(r"default@\S+ ready\.", timeout=90)
        return worker

    def start_web(self, name="web", env=None):
        """gunicorn with compose.yaml's command line, bound to a free loopback port."""
        command = yaml.safe_load((self.project / "compose.yaml").read_text())["services"]["web"]["command"]
        port = free_port()
        command[command.index("--bind") + 1] = f"127.0.0.1:{port}"
        web = self.start(name, " ".join(command), env=env)
        wait_for_port(port, timeout=60, proc=web.proc)
        return port

    def kill_all(self):
        for service in self.services.values():
            if service.proc.poll() is None:
                service.kill()


def get(port: int, path: str) -> int:
    """The status of a GET through the proxy's headers (TLS ended, Host allowed)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"X-Forwarded-Proto": "https"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def task_succeeded(worker, task_id: str, timeout: float = WAIT) -> None:
    worker.wait_for_log(rf"sentrylab\.tasks\.\w+\[{task_id}\] succeeded", timeout=timeout)


@pytest.fixture(scope="module")
def lab(request, venv, tmp_path_factory):
    once_per_run(request, "boot-sentry")
    require("Redis", REDIS)
    require("PostgreSQL", POSTGRES)
    workdir = tmp_path_factory.mktemp("boot-sentry")
    project = render(workdir / "project", ANSWERS)
    shutil.copytree(SENTRYLAB, project / "sentrylab", ignore=shutil.ignore_patterns("__pycache__"))
    with contextlib.ExitStack() as stack:
        sentry = stack.enter_context(SentryServer())
        broker, results = stack.enter_context(redis_database(2))
        env = project_env(
            venv,
            DJANGO_SETTINGS_MODULE="sentrylab.settings",
            DATABASE_URL=stack.enter_context(postgres_database()),
            CELERY_BROKER_URL=f"redis://127.0.0.1:6379/{broker}",
            CELERY_RESULT_BACKEND=f"redis://127.0.0.1:6379/{results}",
            SENTRY_DSN=sentry.dsn,
            SENTRY_ENVIRONMENT=ENVIRONMENT,
        )
        lab = Lab(project, env, workdir / "logs", sentry)
        stack.callback(lab.kill_all)
        lab.manage("migrate", "--no-input")
        lab.start_worker()
        yield lab


def test_a_task_that_fails_for_good_is_reported(lab):
    task_id = lab.send("fail_for_good")
    event = lab.sentry.wait_for(
        "event", lambda event: event.get("tags", {}).get("celery_task_id") == task_id and exception_types(event)
    )
    (exception,) = event["exception"]["values"]
    assert exception["type"] == "TaskFailure"
    assert exception["value"] == "sentrylab: the task failed for good"
    assert exception["mechanism"] == {"type": "celery", "handled": False}
    assert event["extra"]["celery-job"]["task_name"] == "sentrylab.tasks.fail_for_good"
    assert event["environment"] == ENVIRONMENT
    # send_default_pii=False: the task's arguments stay out of the event.
    assert event["extra"]["celery-job"]["args"] == "[Filtered]"


def test_a_view_that_raises_is_reported(lab):
    port = lab.start_web()
    assert get(port, "/healthz/") == 200
    assert get(port, "/sentrylab/fail/") == 500
    event = lab.sentry.wait_for("event", lambda event: "ViewFailure" in exception_types(event))
    assert event["exception"]["values"][-1]["value"] == "sentrylab: the view failed"
    assert event["exception"]["values"][-1]["mechanism"]["type"] == "django"
    assert event["request"]["url"] == f"https://127.0.0.1:{port}/sentrylab/fail/"
    assert event["environment"] == ENVIRONMENT


def test_beat_tasks_check_in(lab):
    """monitor_beat_tasks: beat reports a run as in progress, the worker as ok."""
    lab.shell(
        f"""
        from datetime import timedelta
        from django.conf import settings
        from django.utils import timezone
        from django_celery_beat.models import CrontabSchedule, PeriodicTask
        every_minute, _ = CrontabSchedule.objects.get_or_create(minute="*", timezone=settings.CELERY_TIMEZONE)
        # Last run long ago: due the moment beat starts.
        PeriodicTask.objects.create(
            name={TICK!r}, task="sentrylab.tasks.tick", crontab=every_minute,
            last_run_at=timezone.now() - timedelta(minutes=10),
        )
        print("ok")
        """
    )
    lab.start("beat", procfile(lab.project)["beat"])
    started = lab.sentry.wait_for(
        "check_in", lambda c: c["monitor_slug"] == TICK and c["status"] == "in_progress", timeout=90
    )
    assert started["monitor_config"]["schedule"] == {"type": "crontab", "value": "* * * * *"}
    finished = lab.sentry.wait_for(
        "check_in", lambda c: c["check_in_id"] == started["check_in_id"] and c["status"] == "ok"
    )
    assert finished["monitor_slug"] == TICK
    assert finished["environment"] == ENVIRONMENT


def test_a_stored_redis_result_expires_after_result_expires(lab):
    """The result's key carries a TTL of CELERY_RESULT_EXPIRES, set by a real worker."""
    task_id = lab.send("retry_then_succeed")
    task_succeeded(lab.services["worker-default"], task_id)
    import redis

    ttl = redis.Redis.from_url(lab.env["CELERY_RESULT_BACKEND"]).ttl(f"celery-task-meta-{task_id}")
    assert ttl > 0, f"the result's key has no TTL (redis TTL {ttl}): it never expires"
    expires = lab.shell("from config.celery import app; print(app.conf.result_expires)")
    assert int(expires) - 60 <= ttl <= int(expires), (ttl, expires)


def test_a_task_that_retries_then_succeeds_reports_no_error(lab):
    worker = lab.services["worker-default"]
    task_id = lab.send("retry_then_succeed")
    task_succeeded(worker, task_id)
    assert len(re.findall(rf"sentrylab\.tasks\.retry_then_succeed\[{task_id}\] retry", worker.output())) == 2
    # A warm shutdown flushes each child's Sentry client: whatever it captured is sent by now.
    assert worker.stop(timeout=60) == 0
    retried = [e for e in lab.sentry.items("event") if e.get("tags", {}).get("celery_task_id") == task_id]
    assert retried == []
    assert not [e for e in lab.sentry.items("event") if "TryAgain" in exception_types(e)]
    # The failing task of the first test was captured: the shutdown did not lose events.
    assert [e for e in lab.sentry.items("event") if "TaskFailure" in exception_types(e)]


def test_without_a_dsn_nothing_is_sent_and_nothing_breaks(lab):
    """SENTRY_DSN empty, as .env has it: tasks, views and beat work, and nothing is sent."""
    for name in ("worker-default", "beat", "web"):
        if name in lab.services:
            lab.services[name].stop(timeout=60)
    before = len(lab.sentry.received)
    env = {key: value for key, value in lab.env.items() if not key.startswith("SENTRY_")}
    env["SENTRY_DSN"] = ""
    # No transport: the SDK has nowhere to send anything, on this server or any other.
    assert lab.shell("import sentry_sdk; print(sentry_sdk.get_client().transport)", env=env) == "None"
    worker = lab.start_worker("worker-default-no-dsn", env=env)
    failed = lab.send("fail_for_good", env=env)
    retried = lab.send("retry_then_succeed", env=env)
    worker.wait_for_log(rf"sentrylab\.tasks\.fail_for_good\[{failed}\] raised unexpected: TaskFailure")
    task_succeeded(worker, retried)
    port = lab.start_web("web-no-dsn", env=env)
    assert get(port, "/healthz/") == 200
    assert get(port, "/sentrylab/fail/") == 500
    codes = [lab.services[name].stop(timeout=60) for name in ("worker-default-no-dsn", "web-no-dsn")]
    assert codes == [0, 0]
    assert lab.sentry.received[before:] == []
