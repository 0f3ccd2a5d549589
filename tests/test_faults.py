"""Fault injection on booted generated projects: tasks must not get lost.

Each test copies a rendered project, adds the test-only `faultlab` app
(tests/fault_app: a task that records its key idempotently and can sleep),
starts workers with the Procfile's exact command lines, injects one fault, and
counts: tasks sent, recorded, lost, duplicate deliveries and how many of those
the idempotent write absorbed. Every test writes its figures to
.cache/fault-report/ and rebuilds the table .cache/fault-report.md.

The variants use small time limits (hard 6 s, soft 4 s) and TASK_MAX_COUNTDOWN=2,
so Redis's visibility timeout, 2 * max(6, 2) = 12 s, lets redelivery happen
within the test. Redis faults use a private redis-server (with AOF, as in
compose); RabbitMQ and PostgreSQL use the running services with a unique vhost
and database.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers import (
    CACHE,
    POSTGRES,
    RABBITMQ,
    ROOT,
    PrivateRedis,
    Service,
    free_port,
    postgres_database,
    procfile,
    project_env,
    rabbitmq_vhost,
    require,
    run,
    start,
    wait_until,
)

TIME_LIMIT, SOFT_TIME_LIMIT, MAX_COUNTDOWN = 6, 4, 2
VISIBILITY_TIMEOUT = 2 * max(TIME_LIMIT, MAX_COUNTDOWN)
LIMITS = {"task_time_limit": TIME_LIMIT, "task_soft_time_limit": SOFT_TIME_LIMIT}
VARIANTS = {
    # Redis results on the same Redis: an outage hits the broker and the backend at once.
    "redis": {"result_backend": "redis", **LIMITS},
    "rabbitmq": {"broker": "rabbitmq", **LIMITS},
}
FAULT_APP = ROOT / "tests" / "fault_app" / "faultlab"
REPORT_DIR = CACHE / "fault-report"
WORKER = "worker-default"
QUEUE = "default"
# ops/transport.py's keys for the queue: messages a worker took but has not claimed.
LANDING, LANDING_INDEX = f"unacked_landing:{QUEUE}", f"unacked_landing_index:{QUEUE}"


# --- The project under test ------------------------------------------------------


@dataclass
class Lab:
    """A generated project with faultlab, its database, and one broker."""

    variant: str
    project: Path
    database_url: str
    logdir: Path
    env: dict = field(default_factory=dict)
    workers: list[Service] = field(default_factory=list)
    redis: PrivateRedis | None = None

    def manage(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return run(["python", "manage.py", *args], self.project, self.env, timeout=timeout, check=check)

    def start_worker(self, name: str = WORKER) -> Service:
        """Start a Procfile process as honcho does: through sh, `exec` keeping its pid."""
        command = procfile(self.project)[name]
        service = start(
            f"{name}-{len(self.workers)}", ["sh", "-c", f"exec {command}"], self.project, self.env, self.logdir
        )
        self.workers.append(service)
        return service

    def ready(self, worker: Service, timeout: float = 90) -> Service:
        worker.wait_for_log(rf"{QUEUE}@\S+ ready\.", timeout=timeout)
        return worker

    def send(
        self,
        batch: str,
        count: int,
        seconds: float = 0.0,
        stubborn: bool = False,
        queue: str = "",
        countdown: float = 0.0,
        retries: int = 0,
    ) -> int:
        args = ["faultlab_send", batch, "--count", str(count), "--seconds", str(seconds)]
        args += ["--stubborn"] if stubborn else []
        args += ["--queue", queue] if queue else []
        args += ["--countdown", str(countdown)] if countdown else []
        args += ["--retries", str(retries)] if retries else []
        return int(self.manage(*args).stdout.strip())

    def send_in_background(self, batch: str, count: int) -> subprocess.Popen:
        # No results: fault 1 is about delivery, and the result writes would halve the pace.
        args = ["faultlab_send", batch, "--count", str(count), "--ignore-result"]
        return subprocess.Popen(
            ["python", "manage.py", *args], cwd=self.project, env=self.env, stdout=subprocess.DEVNULL
        )

    def send_steadily(self, batch: str, count: int, rate: float, seconds: float) -> subprocess.Popen:
        """Send `count` tasks of `seconds` each at `rate` per second, each refused
        publish tried again for up to 120 s, as a client retries a 503; no results.
        finish_sending() reads what it did."""
        args = ["faultlab_send", batch, "--count", str(count), "--rate", str(rate)]
        args += ["--seconds", str(seconds), "--ignore-result", "--patient", "120"]
        return subprocess.Popen(
            ["python", "manage.py", *args],
            cwd=self.project,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    @staticmethod
    def finish_sending(sender: subprocess.Popen, count: int, timeout: float = 240) -> dict:
        """{accepted, refused, longest_gap} of a send_steadily() that sent all `count`."""
        output, _ = sender.communicate(timeout=timeout)
        assert sender.returncode == 0, f"the sender gave up:\n{output[-3000:]}"
        sending = json.loads(output.strip().splitlines()[-1])
        assert sending["accepted"] == count, sending
        return sending

    def completion_gap(self, batch: str, since: float = 0.0, until: float = 1e10) -> float:
        """The longest time, in seconds, between two recorded keys of the batch,
        of those recorded between `since` and `until` (Unix times)."""
        gap = self.sql(
            "SELECT coalesce(extract(epoch FROM max(gap)), 0) FROM (SELECT created_at - lag(created_at) "
            "OVER (ORDER BY created_at) AS gap FROM faultlab_record WHERE key LIKE %s "
            "AND created_at BETWEEN to_timestamp(%s) AND to_timestamp(%s)) AS gaps",
            f"{batch}-%", since, until,
        )  # fmt: skip
        return round(float(gap[0][0]), 1)

    def sql(self, query: str, *params):
        import psycopg

        with psycopg.connect(self.database_url, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()

    def recorded(self, batch: str) -> int:
        return self.sql("SELECT count(*) FROM faultlab_record WHERE key LIKE %s", f"{batch}-%")[0][0]

    def wait_recorded(self, batch: str, count: int, timeout: float) -> int:
        """Wait until `count` keys of `batch` are recorded; returns how many are."""
        deadline = time.monotonic() + timeout
        while (done := self.recorded(batch)) < count and time.monotonic() < deadline:
            time.sleep(0.3)
        return done

    def wait_drained(self, batch: str, sent: int, timeout: float) -> int:
        """Wait until the batch is recorded, or until the broker holds none of it
        and nothing was recorded for longer than the visibility timeout."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while (done := self.recorded(batch)) < sent and time.monotonic() < deadline:
            if done != last:
                last, since = done, time.monotonic()
            elif time.monotonic() - since > VISIBILITY_TIMEOUT + 5 and not any(self.queued().values()):
                # Asking the broker takes a while (rabbitmqctl: seconds): what it
                # held may have been recorded meanwhile.
                return self.recorded(batch)
            time.sleep(0.5)
        return done

    def attempts(self, batch: str, key: str | None = None) -> list[tuple]:
        """Deliveries that started, of a batch or of one key: (key, pid, retries, finished, duplicate)."""
        return self.sql(
            "SELECT key, pid, retries, finished, duplicate FROM faultlab_attempt WHERE key LIKE %s ORDER BY id",
            key or f"{batch}-%",
        )

    def stats(self, batch: str, sent: int) -> dict:
        attempts = self.attempts(batch)
        recorded = self.recorded(batch)
        return {
            "sent": sent,
            "completed": recorded,
            "lost": sent - recorded,
            "deliveries": len(attempts),
            "duplicates": len(attempts) - len({row[0] for row in attempts}),
            "absorbed": sum(1 for row in attempts if row[4]),
            "interrupted": sum(1 for row in attempts if not row[3]),
        }

    def queued(self) -> dict:
        """Messages the broker holds for the queue: ready, and unacknowledged (Redis)."""
        return last_json(self.manage("faultlab_queue", QUEUE).stdout)

    def missing(self, batch: str, sent: int) -> list[str]:
        keys = {f"{batch}-{number:05d}" for number in range(sent)}
        rows = self.sql("SELECT key FROM faultlab_record WHERE key LIKE %s", f"{batch}-%")
        return sorted(keys - {key for (key,) in rows})

    def diagnosis(self, batch: str, sent: int) -> str:
        """What became of the keys not recorded, for an assertion message."""
        lines = [f"broker holds {self.queued()}"]
        for key in self.missing(batch, sent)[:5]:
            lines.append(f"{key}: attempts {self.attempts(batch, key)}")
            for worker in self.workers:
                lines += [f"  {worker.name}: {line}" for line in worker.output().splitlines() if key in line]
        return "\n".join(lines)

    def full_pool(self, worker: Service, name: str = WORKER) -> set[int]:
        """The worker's pool processes, once it has all of them."""
        size = int(re.search(r"-c (\d+)", procfile(self.project)[name]).group(1))
        pool = wait_until(lambda: len(children(worker.proc.pid)) == size and children(worker.proc.pid), 30)
        assert pool, f"the pool of {worker.name} never reached {size} processes"
        return pool

    def dead_letters(self, task_id: str) -> list[tuple]:
        return self.sql("SELECT exception FROM ops_deadletter WHERE task_id = %s", task_id)

    def stop_all(self) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.kill()
            else:  # children of a killed main process
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.proc.pid, signal.SIGKILL)


def last_json(stdout: str):
    """The JSON a faultlab command prints last (Django may print mail to admins before it)."""
    return json.loads(stdout.strip().splitlines()[-1])


def children(pid: int) -> set[int]:
    """The pool processes of a worker's main process."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(child) for child in path.read_text().split()} if path.exists() else set()


@pytest.fixture(scope="module")
def fault_projects(rendered, venv, tmp_path_factory):
    """fault_projects(variant) -> a copy of the rendered variant with faultlab and a migrated database."""
    projects: dict[str, tuple[Path, str]] = {}
    with contextlib.ExitStack() as stack:

        def _project(variant: str) -> tuple[Path, str]:
            if variant not in projects:
                require("PostgreSQL", POSTGRES)
                project = tmp_path_factory.mktemp(f"faults-{variant}") / "project"
                shutil.copytree(rendered(VARIANTS[variant]), project)
                shutil.copytree(FAULT_APP, project / "faultlab", ignore=shutil.ignore_patterns("__pycache__"))
                # Production-like: settings come from the environment only.
                (project / ".env").unlink()
                url = stack.enter_context(postgres_database("cdc_faults"))
                # migrate talks to the database only; the broker URLs need not answer.
                brokers = {"CELERY_BROKER_URL": "memory://"}
                if VARIANTS[variant].get("result_backend") == "redis":
                    brokers["CELERY_RESULT_BACKEND"] = "redis://127.0.0.1:1/1"
                env = project_env(venv, DJANGO_SETTINGS_MODULE="faultlab.settings", DATABASE_URL=url, **brokers)
                run(["python", "manage.py", "migrate", "--no-input"], project, env)
                projects[variant] = (project, url)
            return projects[variant]

        yield _project


@pytest.fixture
def lab_for(fault_projects, venv, tmp_path):
    """lab_for(variant, broker_port=None, rabbitmq=None, tls=None, sentinels=None) ->
    a Lab with its own broker: a private redis-server (on `broker_port`, not started
    when given), or a vhost of the machine's RabbitMQ, or `rabbitmq` (enginelab.rabbitmq's
    PrivateRabbitMQ), or `sentinels` (sentinellab's, started). `tls`: (chain, key,
    CA) files; the Redis server then serves TLS only, a PrivateRabbitMQ is reached
    on its TLS listener, and the project verifies both against the CA
    (BROKER_TLS_CA_FILE)."""
    labs: list[Lab] = []
    with contextlib.ExitStack() as stack:

        def _lab(variant: str, broker_port: int | None = None, rabbitmq=None, tls=None, sentinels=None) -> Lab:
            project, url = fault_projects(variant)
            lab = Lab(variant, project, url, tmp_path / "logs")
            if sentinels is not None:
                broker, results = sentinels.url(0), sentinels.url(1)
            elif variant == "redis":
                port = broker_port or free_port()
                lab.redis = PrivateRedis(tmp_path / "redis", appendonly=True, port=port, tls=tls and tls[:2])
                if broker_port is None:
                    lab.redis.start()
                stack.callback(lab.redis.kill)
                broker, results = f"{lab.redis.url}/0", f"{lab.redis.url}/1"
            elif rabbitmq is None:
                require("RabbitMQ", RABBITMQ)
                broker, results = stack.enter_context(rabbitmq_vhost("cdc-faults")), None
            else:
                broker, results = (rabbitmq.tls_url if tls else rabbitmq.url), None
            overrides = {
                "DJANGO_SETTINGS_MODULE": "faultlab.settings",
                "TASK_MAX_COUNTDOWN": str(MAX_COUNTDOWN),
                "DATABASE_URL": url,
                "CELERY_BROKER_URL": broker,
            }
            if rabbitmq is not None:  # faultlab_queue's rabbitmqctl: the node's own
                overrides["FAULTLAB_RABBITMQCTL"] = rabbitmq.rabbitmqctl
            if tls:
                overrides["BROKER_TLS_CA_FILE"] = str(tls[2])
            if sentinels is not None:
                overrides.update(sentinels.env)
            # Celery reads CELERY_RESULT_BACKEND itself: set it for Redis results only.
            if results:
                overrides["CELERY_RESULT_BACKEND"] = results
            lab.env = project_env(venv, **overrides)
            stack.callback(lab.stop_all)
            labs.append(lab)
            return lab

        yield _lab


# --- The report --------------------------------------------------------------------


def report(fault: str, broker: str, figures: dict, notes: str = "", started: float | None = None) -> None:
    """Save one row of the fault table, and rebuild .cache/fault-report.md from all rows."""
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    row = {"fault": fault, "broker": broker, **figures, "notes": notes}
    if started is not None:
        row["seconds"] = round(time.monotonic() - started, 1)
    slug = re.sub(r"[^a-z0-9]+", "-", f"{fault}-{broker}".lower()).strip("-")
    # Written whole, then renamed: parallel workers read every row while rebuilding the table.
    partial = REPORT_DIR / f".{slug}.{os.getpid()}.tmp"
    partial.write_text(json.dumps(row, indent=2) + "\n")
    os.replace(partial, REPORT_DIR / f"{slug}.json")
    rows = [json.loads(path.read_text()) for path in sorted(REPORT_DIR.glob("*.json"))]
    lines = [
        "| fault | broker | tasks sent | completed | lost | duplicate deliveries | absorbed | cut short | "
        "test time | notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["fault"], r["broker"])):
        lines.append(
            f"| {r['fault']} | {r['broker']} | {r['sent']} | {r['completed']} | {r['lost']} | "
            f"{r['duplicates']} | {r['absorbed']} | {r.get('interrupted', '')} | "
            f"{r.get('seconds', '')} s | {r['notes']} |"
        )
    table = CACHE / f".fault-report.{os.getpid()}.tmp"
    table.write_text("\n".join(lines) + "\n")
    os.replace(table, CACHE / "fault-report.md")


# --- Faults ------------------------------------------------------------------------------

# Four groups of about equal length, one per xdist worker; each group makes its
# own project copy and database once.
KILLS = [pytest.mark.boot, pytest.mark.xdist_group("faults-kills")]
STOPS = [pytest.mark.boot, pytest.mark.xdist_group("faults-stops")]
RABBITMQ_FAULTS = [pytest.mark.boot, pytest.mark.xdist_group("faults-rabbitmq")]
OUTAGES = [pytest.mark.boot, pytest.mark.xdist_group("faults-outages")]


@pytest.mark.parametrize(
    "variant",
    [pytest.param("redis", id="redis", marks=KILLS), pytest.param("rabbitmq", id="rabbitmq", marks=RABBITMQ_FAULTS)],
)
def test_worker_sigkill_mid_batch_loses_nothing(lab_for, variant):
    """1 and 6: SIGKILL the worker's main process mid-batch of 1,000 tasks, restart it.

    RabbitMQ requeues the unacknowledged messages as soon as the connection
    drops. Redis hands them back once the visibility timeout has passed, at a
    worker's sweep; a message the worker was taking as it died comes back from
    its landing list after the landing timeout (ops/transport.py, docs/reliability.md).
    """
    started = time.monotonic()
    lab = lab_for(variant)
    sent, batch = 1000, f"kill-{variant}"
    worker = lab.ready(lab.start_worker())
    sender = lab.send_in_background(batch, sent)
    assert lab.wait_recorded(batch, 100, timeout=60) >= 100
    worker.signal(signal.SIGKILL)
    worker.proc.wait(10)
    done_at_kill = lab.recorded(batch)
    # The pool children die with their parent, as a container's or a cgroup's would.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.proc.pid, signal.SIGKILL)
    assert sender.wait(120) == 0
    assert done_at_kill < sent, "the batch finished before the kill: nothing was tested"
    restarted = lab.ready(lab.start_worker())
    lab.wait_drained(batch, sent, timeout=120)
    figures = lab.stats(batch, sent)
    report(
        "1/6 worker main process SIGKILL mid-batch",
        variant,
        figures,
        f"killed after {done_at_kill} recorded; restarted",
        started,
    )
    assert figures["lost"] == 0, f"{figures}\n{lab.diagnosis(batch, sent)}"
    # Every duplicate delivery was absorbed by the idempotent write, or re-ran an interrupted one.
    assert figures["duplicates"] <= figures["absorbed"] + figures["interrupted"], figures
    assert f"faultlab.tasks.record[{batch}-" in restarted.output()


def hand_to_a_stopped_worker(broker, worker: Service, parked: str) -> str | None:
    """Stop the worker while its blocking pop waits on QUEUE, then move the message
    parked on `parked` there: Redis hands it to a worker that will never read the
    reply. Returns the blocking command, or None if the worker was never caught
    waiting (its wait times out every second, and is sent again)."""
    for _attempt in range(100):
        worker.signal(signal.SIGSTOP)
        waiting = [c["cmd"] for c in broker.client_list() if "b" in c["flags"] and c["cmd"] in ("blmove", "brpop")]
        if waiting:
            broker.lmove(parked, QUEUE, "RIGHT", "LEFT")
            if not broker.llen(QUEUE):  # served to the waiting, stopped, worker
                return waiting[0]
            broker.lmove(QUEUE, parked, "LEFT", "RIGHT")  # its wait had timed out: try again
        worker.signal(signal.SIGCONT)
        time.sleep(0.13)
    return None


@pytest.mark.parametrize("variant", [pytest.param("redis", id="redis", marks=KILLS)])
def test_sigkill_while_the_worker_takes_a_message_loses_nothing(lab_for, variant):
    """1, at the worst instant: Redis has handed the worker a message, and the
    worker dies before it reads the reply. kombu's BRPOP loses that message;
    ops/transport.py's BLMOVE leaves it on the landing list, and a worker's
    sweep puts it back on the queue after the landing timeout."""
    import redis

    started = time.monotonic()
    lab = lab_for(variant)
    lab.send("in-flight", 1, queue="parking")  # a list no worker consumes
    worker = lab.ready(lab.start_worker())
    broker = redis.Redis(port=lab.redis.port)
    command = hand_to_a_stopped_worker(broker, worker, parked="parking")
    assert command, "the worker was never caught waiting for a message"
    os.killpg(worker.proc.pid, signal.SIGKILL)  # the whole worker, as a cgroup kill does
    worker.proc.wait(10)
    assert broker.llen(QUEUE) == broker.llen("parking") == 0
    landed = broker.llen(LANDING)
    restarted = lab.ready(lab.start_worker())
    lab.wait_recorded("in-flight", 1, timeout=30)
    figures = lab.stats("in-flight", 1)
    report(
        "1 worker SIGKILL with a message in flight (reply unread)",
        variant,
        figures,
        f"taken with {command.upper()}; back on the queue from the landing list after the landing timeout",
        started,
    )
    assert figures["lost"] == 0, f"taken with {command.upper()}, then lost"
    assert (command, landed) == ("blmove", 1)
    assert "Put 1 message(s) left landed back on default" in restarted.output()
    assert not broker.exists(LANDING, LANDING_INDEX)


@pytest.mark.parametrize("variant", [pytest.param("redis", id="redis", marks=KILLS)])
def test_sigkill_of_a_prefork_child_retries_its_task(lab_for, variant):
    """2: a child killed mid-task (OOM killer) -> the task is retried, once, not lost."""
    started = time.monotonic()
    lab = lab_for(variant)
    worker = lab.ready(lab.start_worker())
    pool = lab.full_pool(worker)
    lab.send("victim", 1, seconds=SOFT_TIME_LIMIT - 0.5)
    attempt = wait_until(lambda: lab.attempts("victim"), timeout=30, interval=0.05)
    assert attempt, "the victim task never started"
    pid = attempt[0][1]
    assert pid in pool
    os.kill(pid, signal.SIGKILL)
    assert lab.wait_recorded("victim", 1, timeout=30) == 1
    others = lab.send("bystander", 20, seconds=0.1)
    assert lab.wait_recorded("bystander", others, timeout=30) == others
    figures = lab.stats("victim", 1)
    report("2 prefork child SIGKILL during a task", variant, figures, "retried by task_retry_on_worker_lost", started)
    attempts = lab.attempts("victim")
    assert [(row[2], row[3]) for row in attempts] == [(0, False), (1, True)], attempts
    assert "WorkerLostError" in worker.output()
    assert not lab.dead_letters("victim-00000")
    # The pool replaced the child and the worker serves on.
    assert worker.proc.poll() is None
    assert wait_until(lambda: pid not in children(worker.proc.pid) and len(children(worker.proc.pid)) == len(pool), 10)


@pytest.mark.parametrize(
    "variant",
    [pytest.param("redis", id="redis", marks=STOPS), pytest.param("rabbitmq", id="rabbitmq", marks=RABBITMQ_FAULTS)],
)
def test_warm_shutdown_finishes_running_tasks_and_keeps_the_rest(lab_for, variant):
    """3 and 6: SIGTERM to the main process mid-batch is a warm shutdown."""
    started = time.monotonic()
    lab = lab_for(variant)
    sent, batch = 40, f"warm-{variant}"
    worker = lab.ready(lab.start_worker())
    lab.send(batch, sent, seconds=1)
    assert lab.wait_recorded(batch, 8, timeout=60) >= 8
    code = worker.stop(timeout=3 * TIME_LIMIT)
    assert code == 0, worker.output()[-3000:]
    assert "Warm shutdown" in worker.output()
    done_at_stop, at_stop = lab.recorded(batch), lab.stats(batch, sent)
    # Running tasks finished: no delivery was cut short.
    assert at_stop["interrupted"] == 0, at_stop
    assert 0 < done_at_stop < sent
    # Unstarted ones, prefetched ones included, wait in the queue; on Redis, a
    # message the worker was taking as it closed waits on the landing list.
    # Rarely, a task that finished as the worker shut down goes back too,
    # unacknowledged (at least once): it may run again, and its idempotent write
    # absorbs it (checked below).
    # rabbitmqctl's counts of quorum queues lag a few seconds behind the worker's exit.
    queued = wait_until(lambda: (counts := lab.queued())["unacked"] == 0 and counts, 15, 1) or lab.queued()
    assert queued["unacked"] == 0, queued
    waiting = queued["ready"] + (queued["landed"] or 0)
    assert waiting >= sent - done_at_stop, queued
    requeued_after_running = waiting - (sent - done_at_stop)
    restarted = lab.ready(lab.start_worker())
    lab.wait_recorded(batch, sent, timeout=60)
    figures = lab.stats(batch, sent)
    report(
        "3/6 warm shutdown (SIGTERM) mid-batch",
        variant,
        figures,
        f"{done_at_stop} done at shutdown, {sent - done_at_stop} left queued; restarted",
        started,
    )
    assert figures["lost"] == 0, figures
    assert figures["duplicates"] <= requeued_after_running, figures
    assert restarted.proc.poll() is None


@pytest.mark.parametrize(
    "variant",
    [pytest.param("redis", id="redis", marks=STOPS), pytest.param("rabbitmq", id="rabbitmq", marks=RABBITMQ_FAULTS)],
)
def test_shutdown_deadline_frees_a_worker_from_a_task_handed_but_not_started(lab_for, variant):
    """3 and 6, at the worst instant: SIGTERM comes just after the worker handed
    a task to a pool process that has not started it yet (a stopped process
    stands in for one the scheduler has not run). The shutdown drops the task
    from the pool's books, but the process runs it once it runs again, and then
    waits 30 s for the main process to read its result, while the main process
    waits for it without a timeout. ops/shutdown.py kills it at the hard time
    limit + 5 s; the task's message, never acknowledged, goes back to the queue."""
    started = time.monotonic()
    lab = lab_for(variant)
    batch = f"handed-{variant}"
    worker = lab.ready(lab.start_worker())
    pool = sorted(lab.full_pool(worker))
    stopped = pool[-1]
    os.kill(stopped, signal.SIGSTOP)
    try:
        sent = lab.send(batch, len(pool), seconds=1)
        # The others started theirs; the last task went to the stopped process.
        assert wait_until(lambda: len(lab.attempts(batch)) == len(pool) - 1, 30), lab.attempts(batch)
        time.sleep(0.3)
        worker.signal(signal.SIGTERM)
        term = time.monotonic()
        time.sleep(3)  # the others finish; the main process now waits for its pool
    finally:
        os.kill(stopped, signal.SIGCONT)
    try:
        code = worker.proc.wait(3 * TIME_LIMIT - (time.monotonic() - term))
    except subprocess.TimeoutExpired:
        code = None
    took = time.monotonic() - term
    assert code == 0, worker.output()[-3000:]
    assert f"Shutdown still waiting for pool processes [{stopped}]" in worker.output()
    done_at_stop = lab.recorded(batch)

    def settled() -> dict | None:
        """The broker's counts once the handed task's message is back, whether it
        ran before the kill or not (rabbitmqctl's quorum queue counts lag a few seconds)."""
        queued = lab.queued()
        waiting = queued["ready"] + (queued["landed"] or 0)
        return queued if queued["unacked"] == 0 and waiting >= max(1, sent - done_at_stop) else None

    assert wait_until(settled, timeout=15, interval=1), lab.queued()
    restarted = lab.ready(lab.start_worker())
    lab.wait_recorded(batch, sent, timeout=60)
    figures = lab.stats(batch, sent)
    report(
        "3/6 warm shutdown with a task handed but not started",
        variant,
        figures,
        f"exit 0 in {took:.1f} s: the pool process killed at the deadline; its task back in the queue; restarted",
        started,
    )
    assert figures["lost"] == 0, figures
    assert figures["duplicates"] <= 1, figures
    assert restarted.proc.poll() is None


@pytest.mark.parametrize("variant", [pytest.param("redis", id="redis", marks=STOPS)])
def test_hard_time_limit_kills_the_child_and_dead_letters_the_task(lab_for, variant):
    """7: a task that ignores its soft limit is killed at the hard limit, recorded
    as a dead letter, not retried; the pool replaces the child and serves on."""
    started = time.monotonic()
    lab = lab_for(variant)
    worker = lab.ready(lab.start_worker())
    pool = lab.full_pool(worker)
    lab.send("stuck", 1, seconds=4 * TIME_LIMIT, stubborn=True)
    attempt = wait_until(lambda: lab.attempts("stuck"), timeout=30)
    assert attempt
    pid = attempt[0][1]
    letters = wait_until(lambda: lab.dead_letters("stuck-00000"), timeout=3 * TIME_LIMIT)
    assert letters and "TimeLimitExceeded" in letters[0][0], letters
    worker.wait_for_log(r"Hard time limit \(6s\) exceeded for faultlab\.tasks\.record\[stuck-00000\]")
    replaced = wait_until(
        lambda: pid not in children(worker.proc.pid) and len(children(worker.proc.pid)) == len(pool), 15
    )
    assert replaced, f"child {pid} not replaced: {children(worker.proc.pid)}"
    after = lab.send("after-limit", 10)
    assert lab.wait_recorded("after-limit", after, timeout=30) == after
    states = last_json(lab.manage("faultlab_results", "stuck", "--count", "1").stdout)
    figures = lab.stats("stuck", 1)
    report(
        "7 hard time limit",
        variant,
        {**figures, "completed": 0, "lost": 0},
        "killed at 6 s, dead-lettered (ops.DeadLetter), result FAILURE; worker served 10 more",
        started,
    )
    assert states == {"FAILURE": 1}
    assert len(lab.attempts("stuck")) == 1, "the timed-out task ran again"
    assert worker.proc.poll() is None


# --- Broker outages (private Redis) ------------------------------------------------------------


@pytest.mark.parametrize("variant", [pytest.param("redis", id="redis", marks=OUTAGES)])
def test_redis_restart_mid_batch_loses_nothing(lab_for, variant):
    """4: Redis (AOF, fsync always, as in compose) restarts while tasks run and wait.

    Redis is stopped while the pool's processes are mid-task, so that running
    tasks are cancelled on the lost connection and must run again. Should the
    worker exit instead of reconnecting, it is restarted, as systemd or compose
    would, and the test fails after counting.
    """
    started = time.monotonic()
    lab = lab_for(variant)
    sent, batch = 60, "redis-restart"
    worker = lab.ready(lab.start_worker())
    lab.send(batch, sent, seconds=1)
    assert lab.wait_recorded(batch, 12, timeout=60) >= 12

    def mid_task():
        (age,) = lab.sql(
            "SELECT extract(epoch FROM now() - max(started_at)) FROM faultlab_attempt WHERE key LIKE %s",
            f"{batch}-%",
        )[0]
        return 0.3 <= float(age) <= 0.6

    assert wait_until(mid_task, timeout=20, interval=0.05)
    lab.redis.stop()
    done_at_stop = lab.recorded(batch)
    time.sleep(2)
    lab.redis.start()
    restarts = 0
    deadline = time.monotonic() + VISIBILITY_TIMEOUT + 60
    while lab.recorded(batch) < sent and time.monotonic() < deadline:
        if worker.proc.poll() is not None:
            restarts += 1
            worker = lab.ready(lab.start_worker())
        time.sleep(0.5)
    figures = lab.stats(batch, sent)
    states = last_json(lab.manage("faultlab_results", batch, "--count", str(sent)).stdout)
    first = lab.workers[0].output()
    report(
        "4 Redis restart mid-batch (AOF)",
        variant,
        figures,
        f"down 2 s after {done_at_stop} recorded; "
        + ("reconnected by itself" if not restarts else f"worker exited, restarted {restarts}x")
        + f"; results {states}",
        started,
    )
    assert figures["lost"] == 0, f"{figures}\n{lab.diagnosis(batch, sent)}"
    assert states == {"SUCCESS": sent}, states
    assert restarts == 0, f"the worker did not reconnect by itself:\n{first[-3000:]}"
    assert len(re.findall(r"Connected to redis://", first)) == 2, first[-3000:]


@pytest.mark.parametrize("variant", [pytest.param("redis", id="redis", marks=OUTAGES)])
def test_broker_down_at_start_up(lab_for, variant):
    """5: the worker waits for the broker; a web request that enqueues gets a 503
    and its transaction rolls back; once the broker is up, both work."""
    started = time.monotonic()
    port = free_port()
    lab = lab_for(variant, broker_port=port)

    refused = last_json(lab.manage("faultlab_post_report").stdout)
    assert refused["status"] == 503, refused
    assert "unavailable" in refused["body"]["error"]
    assert refused["reports_after"] == refused["reports_before"], "the report was saved without its tasks"

    worker = lab.start_worker()
    worker.wait_for_log(rf"Cannot connect to redis://[^\n]*127\.0\.0\.1:{port}[^\n]*\n\s*Trying again", timeout=60)
    time.sleep(3)
    assert worker.proc.poll() is None, "the worker gave up on the broker"
    lab.redis.start()
    lab.ready(worker, timeout=60)
    sent = lab.send("late-broker", 20)
    assert lab.wait_recorded("late-broker", sent, timeout=30) == sent

    accepted = last_json(lab.manage("faultlab_post_report").stdout)
    assert accepted["status"] == 202, accepted
    assert accepted["reports_after"] == accepted["reports_before"] + 1
    report(
        "5 broker down at start-up",
        variant,
        lab.stats("late-broker", sent),
        "worker waited, then served; POST /reports/ got 503 and saved nothing, then 202",
        started,
    )


# --- Visibility timeout guard ---------------------------------------------------------------


def test_visibility_timeout_guards_fail_when_broken(rendered, venv, tmp_path):
    """8: the generated project's test and system check catch a visibility timeout
    that does not outlast the hard time limit, and a countdown cap below the
    retry delay of a task."""
    project = tmp_path / "project"
    shutil.copytree(rendered(VARIANTS["redis"]), project)
    (project / ".env").unlink()
    env = project_env(
        venv,
        DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3",
        CELERY_BROKER_URL="redis://127.0.0.1:6379/0",
        CELERY_RESULT_BACKEND="redis://127.0.0.1:6379/1",
    )
    test = ["python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_settings.py", "-k", "visibility"]
    assert "1 passed" in run(test, project, env).stdout
    run(["python", "manage.py", "check"], project, env)

    settings = project / "config" / "settings.py"
    text = settings.read_text()
    broken = re.sub(
        r"^REDIS_VISIBILITY_TIMEOUT = .*$", "REDIS_VISIBILITY_TIMEOUT = CELERY_TASK_TIME_LIMIT", text, flags=re.M
    )
    assert broken != text
    settings.write_text(broken)
    failed = run(test, project, env, check=False)
    assert failed.returncode == 1 and "1 failed" in failed.stdout, failed.stdout
    check = run(["python", "manage.py", "check"], project, env, check=False)
    assert check.returncode != 0
    assert "ops.E001" in check.stderr + check.stdout
    # A countdown cap below the 180 s retry after a lost worker: ops.E002.
    settings.write_text(text)
    check = run(["python", "manage.py", "check"], project, {**env, "TASK_MAX_COUNTDOWN": "60"}, check=False)
    assert check.returncode != 0
    assert "reports.tasks.email_report: (ops.E002)" in check.stderr + check.stdout
