"""Boot generated projects for real: workers, beat, Flower and web, started
with the Procfile's own command lines against the running Redis, PostgreSQL
and RabbitMQ, then a task round trip through every queue.

The tests of one variant share one booted project and run in order on one
xdist worker; the last one stops everything and checks the shutdown.
"""

import contextlib
import json
import shutil
import socket
import textwrap
import time
from pathlib import Path

import pytest

from helpers import (
    POSTGRES,
    RABBITMQ,
    REDIS,
    free_port,
    http,
    once_per_run,
    postgres_database,
    procfile,
    project_env,
    rabbitmq_vhost,
    redis_database,
    require,
    run,
    start,
    wait_for_port,
)
from variants import BOOT_VARIANTS

SCHEDULE_NAME = "Purge dead letters older than 30 days"


class FlakySMTP:
    """An SMTP server whose first message gets a 451 "try again later"."""

    def __init__(self):
        self.attempts = 0
        self.delivered = []

    async def handle_DATA(self, server, session, envelope):
        self.attempts += 1
        if self.attempts == 1:
            return "451 4.3.0 Try again later"
        self.delivered.append(envelope)
        return "250 OK"


class Booted:
    def __init__(self, name, answers, project, env, logdir, smtp):
        self.name, self.answers, self.project = name, answers, project
        self.env, self.logdir, self.smtp = env, logdir, smtp
        self.services = {}

    def manage(self, *args, timeout=120):
        return run(["python", "manage.py", *args], self.project, self.env, timeout=timeout)

    def shell(self, code, timeout=120):
        return self.manage("shell", "-c", textwrap.dedent(code), timeout=timeout)

    def start(self, process):
        """Start a Procfile process through sh, as honcho does (`exec` keeps it the main process)."""
        command = procfile(self.project)[process]
        self.services[process] = start(process, ["sh", "-c", f"exec {command}"], self.project, self.env, self.logdir)
        return self.services[process]

    def kill_all(self):
        for service in self.services.values():
            if service.proc.poll() is None:
                service.kill()


def boot_params():
    for name in BOOT_VARIANTS:
        yield pytest.param(name, id=name, marks=[pytest.mark.boot, pytest.mark.xdist_group(f"boot-{name}")])


@pytest.fixture(scope="module", params=list(boot_params()))
def booted(request, rendered, venv, tmp_path_factory):
    from aiosmtpd.controller import Controller

    name = request.param
    once_per_run(request, f"boot-{name}")
    answers = BOOT_VARIANTS[name]
    broker = answers.get("broker", "redis")
    results = answers.get("result_backend", "django-db")
    database = answers.get("database", "postgresql")
    if "redis" in (broker, results):
        require("Redis", REDIS)
    if broker == "rabbitmq":
        require("RabbitMQ", RABBITMQ)
    if database == "postgresql":
        require("PostgreSQL", POSTGRES)

    workdir = tmp_path_factory.mktemp(f"boot-{name}")
    project = workdir / "project"
    shutil.copytree(rendered(answers), project)
    smtp = FlakySMTP()
    controller = Controller(smtp, hostname="127.0.0.1", port=free_port())

    with contextlib.ExitStack() as stack:
        controller.start()
        stack.callback(controller.stop)
        env = {
            "FLOWER_USER": "admin",
            "FLOWER_PASSWORD": "flower-boot-test-password",
            "FLOWER_PORT": str(free_port()),
            "PORT": str(free_port()),
            "DJANGO_EMAIL_URL": f"smtp://127.0.0.1:{controller.port}",
            "DATABASE_URL": f"sqlite:///{project}/db.sqlite3",
        }
        if "redis" in (broker, results):
            numbers = stack.enter_context(redis_database(2 if results == "redis" else 1))
        if broker == "redis":
            env["CELERY_BROKER_URL"] = f"redis://127.0.0.1:6379/{numbers[0]}"
        else:
            env["CELERY_BROKER_URL"] = stack.enter_context(rabbitmq_vhost())
        if results == "redis":
            env["CELERY_RESULT_BACKEND"] = f"redis://127.0.0.1:6379/{numbers[-1]}"
        if database == "postgresql":
            env["DATABASE_URL"] = stack.enter_context(postgres_database())

        booted = Booted(name, answers, project, project_env(venv, **env), workdir / "logs", smtp)
        stack.callback(booted.kill_all)
        booted.manage("migrate", "--no-input")
        workers = [process for process in procfile(project) if process.startswith("worker-")]
        for process in workers:
            booted.start(process)
        for process in workers:
            queue = process.removeprefix("worker-")
            booted.services[process].wait_for_log(rf"{queue}@\S+ ready\.", timeout=90)
        yield booted


def test_every_queue_is_served_by_its_own_worker(booted):
    out = booted.manage("celery_healthcheck", "--timeout", "20").stdout
    queues = [line.split()[0] for line in out.splitlines()]
    expected = [p.removeprefix("worker-") for p in procfile(booted.project) if p.startswith("worker-")]
    assert queues == expected
    for line in out.splitlines():
        queue, state, node, *_ = line.split()
        assert state == "ok", line
        assert node.startswith(f"{queue}@"), f"queue {queue} was served by {node}"


def test_healthcheck_fails_for_a_queue_without_a_worker(booted):
    booted.services["worker-render"].stop()
    try:
        proc = run(
            ["python", "manage.py", "celery_healthcheck", "--queue", "render", "--timeout", "3"],
            booted.project,
            booted.env,
            check=False,
        )
        assert proc.returncode == 1
        assert "TIMEOUT" in proc.stdout
    finally:
        booted.start("worker-render").wait_for_log(r"render@\S+ ready\.", timeout=90)


def test_example_tasks_run_end_to_end_with_a_retry(booted):
    has_results = booted.answers.get("result_backend", "django-db") != "none"
    out = booted.shell(
        f"""
        import json, time
        from reports.models import Report
        from reports.tasks import render_and_email

        ids = [Report.objects.create(title="Boot", recipient=f"r{{n}}@example.com").pk for n in range(2)]
        result = render_and_email(ids)
        summary = result.get(timeout=60) if {has_results} else None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = Report.objects.filter(pk__in=ids, status="ready", emailed_at__isnull=False).count()
            if done == len(ids):
                break
            time.sleep(0.2)
        print(json.dumps({{"done": done, "summary": summary}}))
        """
    ).stdout
    outcome = json.loads(out.strip().splitlines()[-1])
    assert outcome["done"] == 2
    if has_results:
        assert outcome["summary"] == {"reports": 2, "ready": 2}
    # The first message got a 451 and was retried; both reports arrived.
    assert booted.smtp.attempts == 3
    assert sorted(e.rcpt_tos[0] for e in booted.smtp.delivered) == ["r0@example.com", "r1@example.com"]
    email_log = booted.services["worker-email"].output()
    assert "Retry in" in email_log
    assert email_log.count("reports.tasks.email_report[") >= 3
    assert "reports.tasks.render_report[" in booted.services["worker-render"].output()
    assert "reports.tasks.render_report[" not in email_log


def test_beat_sends_the_seeded_schedule(booted):
    # Run the seeded schedule every second, as an operator could in the admin.
    booted.shell(
        f"""
        from django_celery_beat.models import IntervalSchedule, PeriodicTask
        every_second, _ = IntervalSchedule.objects.get_or_create(every=1, period="seconds")
        task = PeriodicTask.objects.get(name={SCHEDULE_NAME!r})
        task.crontab, task.interval = None, every_second
        task.save()
        """
    )
    worker = booted.services["worker-default"]
    start = len(worker.output())
    booted.start("beat").wait_for_log(r"beat: Starting", timeout=60)
    worker.wait_for_log(r"ops\.tasks\.purge_dead_letters\[[\w-]+\] succeeded", timeout=60, start=start)


def listening_addresses(port):
    """Local addresses of the TCP sockets listening on `port` (from /proc/net/tcp*)."""
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:
                if len(address) == 8:
                    addresses.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]))
                else:
                    addresses.add(f"ipv6:{address}")
    return addresses


def test_flower_requires_auth(booted):
    flower = booted.start("flower")
    port = int(booted.env["FLOWER_PORT"])
    wait_for_port(port, proc=flower.proc)
    base = f"http://127.0.0.1:{port}/flower"
    credentials = f"{booted.env['FLOWER_USER']}:{booted.env['FLOWER_PASSWORD']}"
    assert http(f"{base}/")[0] == 401
    assert http(f"{base}/api/workers")[0] == 401
    assert http(f"{base}/", auth="admin:wrong-password")[0] == 401
    assert http(f"{base}/", auth=credentials)[0] == 200
    # Flower's worker list fills in as the workers answer its broadcasts.
    expected = {p.removeprefix("worker-") for p in procfile(booted.project) if p.startswith("worker-")}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, body = http(f"{base}/api/workers?refresh=1", auth=credentials)
        assert status == 200
        seen = {node.partition("@")[0] for node in json.loads(body)}
        if seen >= expected:
            break
        time.sleep(1)
    assert seen >= expected
    assert listening_addresses(port) == {"127.0.0.1"}


def test_flower_turns_on_the_events_that_settings_leave_off(booted):
    """Task events cost a publish per task, so settings leave them off; Flower
    (started by the test above) asks the workers for them and lists tasks."""
    assert "CELERY_WORKER_SEND_TASK_EVENTS = False" in (booted.project / "config" / "settings.py").read_text()
    if "flower" not in booted.services:
        wait_for_port(int(booted.env["FLOWER_PORT"]), proc=booted.start("flower").proc)
    base = f"http://127.0.0.1:{booted.env['FLOWER_PORT']}/flower"
    credentials = f"{booted.env['FLOWER_USER']}:{booted.env['FLOWER_PASSWORD']}"
    worker = booted.services["worker-default"]
    worker.wait_for_log(r"Events of group \{task\} enabled by remote", timeout=30)
    task_id = booted.shell("from ops.tasks import purge_dead_letters; print(purge_dead_letters.delay().id)").stdout
    task_id = task_id.strip().splitlines()[-1]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, body = http(f"{base}/api/task/info/{task_id}", auth=credentials)
        if status == 200 and json.loads(body).get("state") == "SUCCESS":
            break
        time.sleep(0.5)
    assert status == 200, body
    assert json.loads(body)["name"] == "ops.tasks.purge_dead_letters"


def test_web_answers_its_health_check(booted):
    web = booted.start("web")
    port = int(booted.env["PORT"])
    wait_for_port(port, proc=web.proc)
    status, body = http(f"http://127.0.0.1:{port}/healthz/")
    assert status == 200, body
    assert json.loads(body) == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}


def test_everything_stops_cleanly(booted):
    codes = {name: service.stop(timeout=60) for name, service in booted.services.items()}
    assert codes == dict.fromkeys(booted.services, 0), codes
    for name, service in booted.services.items():
        if name.startswith("worker-"):
            assert "Warm shutdown" in service.output(), name
