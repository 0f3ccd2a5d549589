"""Metrics of a booted project as a real Prometheus scrapes them (ops/metrics.py).

For each broker: web under gunicorn (two workers) and a prefork worker that
replaces its children every few tasks, each with its own metrics directory and
listener, scraped every second by Debian's Prometheus. Half a batch is sent
while the worker is down, so that the queue's depth shows all of it; the
worker drains it, one of its children (which ran tasks) is SIGKILLed, and the
other half follows, with a dead letter. What Prometheus read must match what
was sent: counts per task name and outcome, the depth falling to zero, one
dead letter counted once (and seen as an increase, as an alert would), and no
counter ever going back.
"""

import contextlib
import json
import os
import shutil
import signal
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from obslab.dashboard import draw
from obslab.dashboard import queries as dashboard_queries
from obslab.otlp import otlp_receiver
from obslab.prometheus import prometheus
from obslab.spy import stacks

from helpers import (
    CACHE,
    RABBITMQ,
    REDIS,
    free_port,
    http,
    project_env,
    rabbitmq_vhost,
    redis_database,
    require,
    run,
    start,
    wait_for_port,
    wait_until,
)

VARIANTS = {
    "redis": {"database": "sqlite", "result_backend": "none", "use_flower": False},
    "rabbitmq": {"broker": "rabbitmq", "database": "sqlite", "result_backend": "none", "use_flower": False},
}
SENT = 60
PURGE, RENDER = "ops.tasks.purge_dead_letters", "reports.tasks.render_report"
SCHEDULE = "observability: every second"
REPORT = CACHE / "observability"


def children(pid: int) -> list[int]:
    """The processes `pid` forked, from any of its threads."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(FileNotFoundError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def json_records(service) -> list[dict]:
    """Every line of a service's log, each of which must be a JSON object."""
    records = []
    for number, line in enumerate(service.output().splitlines(), 1):
        try:
            records.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"{service.name}.log, line {number}, is not JSON: {line[:300]}") from None
    return records


def send(project: Path, env: dict, count: int, dead: int = 0) -> None:
    run(
        [
            "python", "manage.py", "shell", "-c",
            "from ops.tasks import purge_dead_letters\n"
            "from reports.tasks import render_report\n"
            f"for _ in range({count}): purge_dead_letters.apply_async(queue='default')\n"
            f"for _ in range({dead}): render_report.apply_async((987654321,), queue='default')\n",
        ],
        project,
        env,
    )  # fmt: skip


@pytest.mark.boot
@pytest.mark.parametrize("broker", VARIANTS)
def test_prometheus_reads_what_was_sent(broker, rendered, venv, tmp_path):
    require("Redis", REDIS) if broker == "redis" else require("RabbitMQ", RABBITMQ)
    project = tmp_path / "project"
    shutil.copytree(rendered(VARIANTS[broker]), project)
    with redis_database() if broker == "redis" else rabbitmq_vhost("obs") as claimed:
        url = f"redis://127.0.0.1:6379/{claimed[0]}" if broker == "redis" else claimed
        env = project_env(
            venv,
            DATABASE_URL=f"sqlite:///{project}/db.sqlite3",
            CELERY_BROKER_URL=url,
            DJANGO_SECURE_SSL_REDIRECT="false",
            METRICS_ADDRESS="127.0.0.1",
        )
        run(["python", "manage.py", "migrate", "--noinput"], project, env)
        # A schedule beat sends every second, to a queue nobody consumes here, and
        # no other: the project's own purge runs daily at 03:00, and a run across
        # that minute counted one purge more than it sent.
        run(
            [
                "python", "manage.py", "shell", "-c",
                "from django_celery_beat.models import IntervalSchedule, PeriodicTask\n"
                "PeriodicTask.objects.update(enabled=False)\n"
                "every, _ = IntervalSchedule.objects.get_or_create(every=1, period='seconds')\n"
                f"PeriodicTask.objects.create(name={SCHEDULE!r}, task={PURGE!r}, interval=every, queue='email')\n",
            ],
            project,
            env,
        )  # fmt: skip
        logs = tmp_path / "logs"
        ports = {name: free_port() for name in ("web", "web-metrics", "worker-metrics", "beat-metrics")}
        services = []
        try:
            web = start(
                "web",
                ["gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{ports['web']}", "--workers", "2"],
                project,
                {
                    **env,
                    "METRICS_PORT": str(ports["web-metrics"]),
                    "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics-web"),
                },
                logs,
            )
            services.append(web)
            beat = start(
                "beat",
                ["celery", "-A", "config", "beat", "--loglevel", "INFO"],
                project,
                {
                    **env,
                    "METRICS_PORT": str(ports["beat-metrics"]),
                    "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics-beat"),
                },
                logs,
            )
            services.append(beat)
            wait_for_port(ports["web-metrics"], timeout=60, proc=web.proc)
            jobs = {name: [f"127.0.0.1:{ports[f'{name}-metrics']}"] for name in ("web", "worker", "beat")}
            with prometheus(jobs, tmp_path / "prometheus", ready=["web", "beat"]) as prom:
                began = time.time()
                # The site's own listener never serves /metrics.
                status, _ = http(f"http://127.0.0.1:{ports['web']}/metrics", host="localhost")
                assert status == 404
                for _ in range(5):
                    assert http(f"http://127.0.0.1:{ports['web']}/healthz/", host="localhost")[0] == 200

                # The first half waits in the queue: the depth shows it whole.
                send(project, env, SENT // 2)
                depth = 'celery_queue_length{queue="default"}'
                assert wait_until(lambda: prom.value(depth) == SENT // 2, timeout=30), prom.query(depth)

                worker = start(
                    "worker",
                    [
                        "celery", "-A", "config", "worker", "-Q", "default", "-n", "obs@%h",
                        "-c", "2", "-P", "prefork", "--max-tasks-per-child", "5", "--loglevel", "INFO",
                    ],
                    project,
                    {
                        **env,
                        "METRICS_PORT": str(ports["worker-metrics"]),
                        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics-worker"),
                    },
                    logs,
                )  # fmt: skip
                services.append(worker)
                succeeded = f'sum(celery_task_succeeded_total{{name="{PURGE}"}})'
                half = wait_until(lambda: prom.value(succeeded) == SENT // 2, timeout=180)
                assert half, (
                    prom.query("celery_task_succeeded_total"),
                    prom.query(depth),
                    prom.scrape_errors(),
                    http(f"http://127.0.0.1:{ports['worker-metrics']}/metrics")[1][-1500:],
                    worker.output()[-1500:],
                    stacks(worker.proc.pid, *children(worker.proc.pid)),
                )
                # A child that ran tasks dies; its samples must stay counted. (Killed
                # idle: a task it held would retry after its default_retry_delay.)
                victims = children(worker.proc.pid)
                assert victims, worker.output()[-3000:]
                os.kill(victims[0], signal.SIGKILL)
                # The dead letter comes now, the first failure of its task name
                # on a worker that has run for a while: an increase from 0.
                send(project, env, SENT - SENT // 2, dead=1)
                for _ in range(5):  # requests Prometheus sees arrive, for the picture's panel
                    assert http(f"http://127.0.0.1:{ports['web']}/healthz/", host="localhost")[0] == 200

                # Every outcome, the dead letter's too: it was sent last and may still run
                # (or wait for the next scrape) when the last purge is counted.
                failed = f'sum(celery_task_failed_total{{name="{RENDER}"}})'
                dead = f'sum(celery_task_dead_lettered_total{{name="{RENDER}"}})'
                done = wait_until(
                    lambda: (
                        (prom.value(succeeded), prom.value(depth), prom.value(failed), prom.value(dead))
                        == (SENT, 0, 1, 1)
                    ),
                    timeout=120,
                )
                prom.scrape_once_more()
                figures = {
                    "succeeded": prom.value(succeeded),
                    "started": prom.value(f'sum(celery_task_started_total{{name="{PURGE}"}})'),
                    "timed": prom.value(f'sum(celery_task_runtime_seconds_count{{name="{PURGE}",state="success"}})'),
                    "failed": prom.value(failed),
                    "dead": prom.value(dead),
                    # What the dashboard's failures panel and an alert on increase() see.
                    "dead_seen": prom.value(
                        f'max_over_time(sum(increase(celery_task_dead_lettered_total{{name="{RENDER}"}}[30s]))[10m:1s])'
                    ),
                    "deepest": prom.value(f"max_over_time({depth}[10m])"),
                    "depth": prom.value(depth),
                    "consuming": prom.value('celery_worker_consuming{queue="default"}'),
                    "beat_sent_ago": prom.value(
                        f'time() - celery_beat_last_sent_timestamp_seconds{{schedule="{SCHEDULE}"}}'
                    ),
                    "beat_sent": prom.value('sum(celery_task_sent_total{job="beat",queue="email"})'),
                    "resets": prom.value(
                        "sum(resets(celery_task_started_total[10m]))"
                        " + sum(resets(celery_task_succeeded_total[10m]))"
                        " + sum(resets(celery_task_runtime_seconds_count[10m]))"
                    ),
                    "healthz": prom.value(
                        'sum(django_http_responses_total_by_status_view_method_total{view="healthz"})'
                    ),
                }
                print(f"\n{broker}: {figures}")
                # Kept for the record (docs/testing.md): what Prometheus read, next to what was sent.
                REPORT.mkdir(parents=True, exist_ok=True)
                record = {"broker": broker, "sent": {PURGE: SENT, RENDER: 1}, "read": figures}
                (REPORT / f"{broker}.json").write_text(json.dumps(record, indent=2) + "\n")
                assert done, (figures, worker.output()[-3000:])
                assert figures["succeeded"] == SENT, figures
                assert figures["timed"] == SENT, figures
                assert figures["started"] == SENT, figures
                assert figures["failed"] == 1 and figures["dead"] == 1, figures
                assert figures["dead_seen"] and figures["dead_seen"] > 0, figures
                assert figures["deepest"] == SENT // 2 and figures["depth"] == 0, figures
                assert figures["consuming"] == 1, figures
                assert figures["beat_sent_ago"] < 10 and figures["beat_sent"] >= 5, figures
                assert figures["resets"] == 0, figures
                assert figures["healthz"] >= 10, figures

                # The Grafana dashboard's queries: each one valid, each panel with
                # data but the 503s (none here).
                dashboard = project / "deploy" / "grafana" / "dashboard.json"
                empty = []
                for title, targets in dashboard_queries(dashboard).items():
                    if not any(prom.query(expr) for expr, _ in targets):
                        empty.append(title)
                assert empty == ["Enqueue failures (503) /s"], empty
                if picture := os.environ.get("CDC_DASHBOARD_PNG"):
                    draw(prom, dashboard, began, time.time(), Path(picture))
        finally:
            for service in reversed(services):
                service.stop(timeout=60)


@pytest.mark.boot
def test_a_request_and_the_tasks_it_sends_share_one_trace(rendered, venv, tmp_path):
    """ops/tracing.py: web and a prefork worker export to a local OTLP receiver.
    The worker replaces each child after one task, so every task span comes from
    a child that exited: without the flush on its way out, none would arrive."""
    require("Redis", REDIS)
    project = tmp_path / "project"
    shutil.copytree(rendered(VARIANTS["redis"]), project)
    with redis_database() as (number,), otlp_receiver() as (receiver, endpoint):
        env = project_env(
            venv,
            DATABASE_URL=f"sqlite:///{project}/db.sqlite3",
            CELERY_BROKER_URL=f"redis://127.0.0.1:6379/{number}",
            DJANGO_ALLOWED_HOSTS="localhost",
            OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
            OTEL_BSP_SCHEDULE_DELAY="500",
            DJANGO_LOG_FORMAT="json",
        )
        run(["python", "manage.py", "migrate", "--noinput"], project, env)
        # A signed-in session, made server-side: the view needs a user.
        session = run(
            [
                "python", "manage.py", "shell", "-c",
                "from django.contrib.auth import get_user_model\n"
                "from django.contrib.sessions.backends.db import SessionStore\n"
                "user = get_user_model().objects.create_user('tracer', password='unused-password-1')\n"
                "s = SessionStore()\n"
                "s['_auth_user_id'] = str(user.pk)\n"
                "s['_auth_user_backend'] = 'django.contrib.auth.backends.ModelBackend'\n"
                "s['_auth_user_hash'] = user.get_session_auth_hash()\n"
                "s.create()\n"
                "print(s.session_key)\n",
            ],
            project,
            env,
        ).stdout.split()[-1]  # fmt: skip
        logs, port = tmp_path / "logs", free_port()
        services = []
        try:
            web = start(
                "web", ["gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "2"], project, env, logs
            )
            services.append(web)
            worker = start(
                "worker",
                [
                    "celery", "-A", "config", "worker", "-Q", "default,render,email", "-n", "trace@%h",
                    "-c", "2", "-P", "prefork", "--max-tasks-per-child", "1", "--loglevel", "INFO",
                ],
                project,
                env,
                logs,
            )  # fmt: skip
            services.append(worker)
            wait_for_port(port, timeout=60, proc=web.proc)
            worker.wait_for_log(r"ready\.", timeout=60)

            # The CSRF secret itself is a valid token; HTTPS as the proxy says it.
            secret = "a" * 32
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/reports/",
                data=urllib.parse.urlencode({"title": "Traced", "recipient": "ops@example.com"}).encode(),
                headers={
                    "Host": "localhost",
                    "X-Forwarded-Proto": "https",
                    "Origin": "https://localhost",
                    "Cookie": f"sessionid={session}; csrftoken={secret}",
                    "X-CSRFToken": secret,
                },
            )
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (loopback)
                assert response.status == 202, response.read()

            def joined():
                spans = receiver.snapshot()
                server = [s for s in spans if s.service.endswith("-web") and s.kind == 2]  # SERVER
                if not server:
                    return None
                trace = [s for s in spans if s.trace_id == server[0].trace_id]
                runs = [s for s in trace if s.service.endswith("-worker") and s.name.startswith("run/")]
                return (server[0], trace, runs) if len(runs) >= 2 else None

            found = wait_until(joined, timeout=60)
            spans = receiver.snapshot()
            assert found, sorted({(s.service, s.name) for s in spans})
            server, trace, runs = found
            names = {s.name for s in runs}
            assert {"run/reports.tasks.render_report", "run/reports.tasks.email_report"} <= names, names
            # Each ran in a child that then exited (--max-tasks-per-child 1).
            pids = {s.pid for s in runs}
            assert len(pids) == len(runs), pids
            gone = wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), timeout=30)
            assert gone, pids  # exited, and reaped by the worker
            # DJANGO_LOG_FORMAT=json: every line either writes is a JSON record, and
            # the task's carry its ids, the trace's and the request's.
            records = {name: json_records(service) for name, service in (("web", web), ("worker", worker))}
            tasks = [r for r in records["worker"] if r.get("task_name") == "reports.tasks.render_report"]
            assert tasks, records["worker"][-5:]
            for record in tasks:
                assert record["task_id"] and record["queue"] == "render", record
                assert record["trace_id"] == server.trace_id, record
                assert len(record["request_id"]) == 32, record
            served = [r for r in records["web"] if r.get("request_id") == tasks[0]["request_id"]]
            assert served, records["web"][-5:]
        finally:
            for service in reversed(services):
                service.stop(timeout=60)
