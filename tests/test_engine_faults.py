"""Faults in a real Docker Engine, counted as the fault table counts them.

One stack per broker (Redis broker with Redis results; RabbitMQ), each the
rendered compose.yaml with small time limits (hard 6 s, soft 4 s), PostgreSQL,
one queue and no beat or Flower, built with the fault tests' `faultlab` app
(enginelab/faults.py). The two stacks run each fault at the same time, one
fault after another:

E1 `docker kill` of the worker container, and a SIGKILL of the worker's main
   process from the host (as the OOM killer would), mid-batch;
E2 `docker compose restart <broker>` mid-batch;
E3 a hung worker main process (SIGSTOP): the healthcheck kills the container's
   processes and the restart policy starts it again;
E4 `docker compose stop` during long tasks: a warm shutdown within
   stop_grace_period;
E5 the worker container cut off its network (`docker network disconnect`)
   and reconnected.

Counts come from PostgreSQL (the host reaches the postgres container on the
project network); every test writes its rows with test_faults.report().
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from enginelab import images
from enginelab.engine import docker, require_engine
from enginelab.faults import OVERRIDE, REPORT_LOCK, FaultStack, on_each, override
from test_faults import FAULT_APP, MAX_COUNTDOWN, QUEUE, VARIANTS, VISIBILITY_TIMEOUT, Lab, report
from test_liveness import DETECTION_BOUND

from helpers import run, wait_until

pytestmark = [pytest.mark.boot, pytest.mark.xdist_group("engine-faults")]

WORKER = f"worker-{QUEUE}"
# test_faults' variants (small time limits), as one compose stack each.
ENGINE_FAULT_VARIANTS = {
    broker: {**answers, "use_beat": False, "use_flower": False, "queues": f"{QUEUE}:4", "deploy": ["compose"]}
    for broker, answers in VARIANTS.items()
}
READY = rf"{QUEUE}@\S+ ready\."
UV = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))


# rabbitmqctl reads a quorum queue's ready and unacknowledged counts from a metrics
# table that the queue refreshes on each tick, every quorum_tick_interval (5000 ms
# by default; rabbit_quorum_queue.erl): a reading can be that old.
QUORUM_TICK = 5


@dataclass
class EngineLab(Lab):
    """test_faults' Lab (counting in PostgreSQL), its commands run in the stack's containers."""

    stack: FaultStack | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def manage(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return self.stack.manage(*args, check=check, timeout=timeout)

    def send_in_background(self, batch: str, count: int) -> subprocess.Popen:
        args = ["faultlab_send", batch, "--count", str(count), "--ignore-result"]
        return self.stack.popen(
            "exec", "-T", "web", "python", "manage.py", *args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def queued(self) -> dict:
        if self.variant != "rabbitmq":
            return super().queued()
        # faultlab_queue asks rabbitmqctl, which is in the rabbitmq container. A
        # quorum queue's counts are those of its last tick: read once more than a
        # tick after the last change (no consumer left), they are the queue's own.
        time.sleep(QUORUM_TICK + 1)
        ready, unacked = self.rabbitmq_queues().get(QUEUE, (0, 0))
        return {"ready": ready, "unacked": unacked, "landed": None}

    def rabbitmq_queues(self) -> dict[str, tuple[int, int]]:
        """RabbitMQ's queues of this vhost: name -> (ready, unacknowledged)."""
        slug = self.stack.answers["project_slug"]
        listed = self.stack.exec(
            "rabbitmq", "rabbitmqctl", "-q", "list_queues", "-p", slug,
            "name", "messages_ready", "messages_unacknowledged", "--no-table-headers",
        ).stdout  # fmt: skip
        return {name: (int(ready), int(unacked)) for name, ready, unacked in map(str.split, listed.splitlines())}

    # -- the worker container --------------------------------------------------------

    def worker_log(self) -> str:
        return self.stack.logs(WORKER)

    def readies(self) -> int:
        """How often the worker has said it is ready, over the container's restarts."""
        return len(re.findall(READY, self.worker_log()))

    def wait_ready(self, after: int, timeout: float) -> float | None:
        """Seconds until the worker says ready for the (after+1)th time, or None."""
        began = time.monotonic()
        if wait_until(lambda: self.readies() > after, timeout, interval=1):
            return time.monotonic() - began
        return None

    def serves(self, name: str, count: int = 10, timeout: float = 60) -> bool:
        sent = self.send(name, count)
        return self.wait_recorded(name, sent, timeout) == sent

    def check(self, batch: str, sent: int, figures: dict) -> None:
        if figures["lost"]:
            log, missing = self.worker_log(), self.missing(batch, sent)[:5]
            said = [line for line in log.splitlines() if any(key in line for key in missing)]
            said += [line for line in log.splitlines() if re.search(r"ERROR|WARNING|Traceback|Error:", line)][-40:]
            raise AssertionError(f"{figures}\n{self.diagnosis(batch, sent)}\n" + "\n".join(said))
        # Every duplicate delivery was absorbed by the idempotent write, or re-ran an interrupted one.
        assert figures["duplicates"] <= figures["absorbed"] + figures["interrupted"], figures

    def row(self, fault: str, figures: dict, notes: str, started: float) -> None:
        with REPORT_LOCK:
            report(fault, self.variant, figures, notes, started)


def boot(broker: str, project, name: str) -> EngineLab:
    stack = FaultStack(project, name, broker=broker)
    stack.answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    stack.dotenv = dict(re.findall(r"^(\w+)=(.*)$", (project / ".env").read_text(), re.M))
    app_services = ["migrate", "web", WORKER]
    environment = {"DJANGO_SETTINGS_MODULE": "faultlab.settings", "TASK_MAX_COUNTDOWN": str(MAX_COUNTDOWN)}
    (project / OVERRIDE).write_text(override(f"cdc-engine-faults-{broker}:latest", app_services, environment))
    stack.run("build", "--progress", "plain", timeout=1800)
    up = stack.run("up", "--detach", "--wait", "--wait-timeout", "300", timeout=600, check=False)
    assert up.returncode == 0, f"up --wait failed ({up.returncode}):\n{up.stderr[-3000:]}\n{stack.describe()}"
    slug, password = stack.answers["project_slug"], stack.dotenv["POSTGRES_PASSWORD"]
    url = f"postgresql://{slug}:{password}@{stack.address('postgres')}:5432/{slug}"
    return EngineLab(broker, project, url, project / "logs", stack=stack)


@pytest.fixture(scope="module")
def labs(rendered, tmp_path_factory):
    """Both stacks, booted at once; torn down (volumes too) after the module."""
    require_engine()
    projects = {}
    for broker, answers in ENGINE_FAULT_VARIANTS.items():
        project = tmp_path_factory.mktemp(f"engine-faults-{broker}") / "project"
        shutil.copytree(rendered(answers), project, symlinks=True)
        shutil.copytree(FAULT_APP, project / "faultlab", ignore=shutil.ignore_patterns("__pycache__"))
        # What a user has before `docker compose build` (docs/deploy-compose.md).
        run([UV, "lock", "--quiet"], project, dict(os.environ), timeout=300)
        images.standins_for(project)
        projects[broker] = project
    suffix = uuid.uuid4().hex[:6]
    names = {broker: f"cdc-faults-{broker}-{suffix}" for broker in projects}
    booted: dict[str, EngineLab] = {}

    def _boot(broker):
        booted[broker] = boot(broker, projects[broker], names[broker])

    try:
        on_each({b: b for b in projects}, _boot)
        yield {broker: booted[broker] for broker in projects}
    finally:
        for broker, project in projects.items():
            FaultStack(project, names[broker]).down()


@pytest.fixture
def steady(labs):
    """Every stack up and its worker serving before a fault; the faults run on them at once."""

    def _steady(lab: EngineLab):
        up = lab.stack.run(
            "up", "--detach", "--wait", "--wait-timeout", "180", "--no-recreate", timeout=300, check=False
        )
        assert up.returncode == 0, f"not steady before the fault:\n{up.stderr[-2000:]}\n{lab.stack.describe()}"

    on_each(labs, _steady)
    return labs


# --- E1: the worker container killed ------------------------------------------------------


def test_e1_docker_kill_of_the_worker(steady):
    """`docker kill` mid-batch: nothing is lost. The restart policy does NOT bring
    the container back: the engine takes a kill for a manual stop (moby's
    daemon/kill.go sets HasBeenManuallyStopped, and daemon/monitor.go then skips
    the restart policy), so `restart: unless-stopped` leaves it exited, as after
    `docker stop`. Its queue waits for `docker compose start`."""

    def fault(lab: EngineLab):
        started = time.monotonic()
        stack, container = lab.stack, lab.stack.container(WORKER)
        before, readies = stack.state(WORKER), lab.readies()
        sent, batch = 300, "e1-kill"
        sender = lab.send_in_background(batch, sent)
        assert lab.wait_recorded(batch, 40, timeout=90) >= 40
        docker("kill", container)
        done_at_kill = lab.recorded(batch)
        assert sender.wait(180) == 0, sender.stderr.read()
        restarted = wait_until(lambda: stack.state(WORKER)["Running"], timeout=15, interval=1)
        after = stack.state(WORKER)
        evidence = f"Status {after['Status']}, ExitCode {after['ExitCode']}, RestartCount {after['RestartCount']}"
        started_at = time.monotonic()
        if not restarted:
            stack.run("start", WORKER)
        ready = lab.wait_ready(readies, timeout=90)
        done = lab.wait_drained(batch, sent, timeout=120)
        figures = lab.stats(batch, sent)
        lab.row(
            "E1 docker kill worker",
            figures,
            f"killed after {done_at_kill} recorded; 15 s later {evidence}: not restarted by "
            f"`restart: unless-stopped` (a kill is a manual stop); `docker compose start` -> ready in "
            f"{ready or 0:.0f} s, batch done {time.monotonic() - started_at:.0f} s after the start",
            started,
        )
        lab.check(batch, sent, figures)
        assert done == sent
        assert 0 < done_at_kill < sent, "the kill was not mid-batch"
        assert ready is not None, f"the worker never said ready again:\n{lab.worker_log()[-3000:]}"
        # What the engine did (moby daemon/kill.go, 20.10 and later).
        assert not restarted, f"the engine restarted the container after `docker kill` ({evidence})"
        assert (after["Status"], after["ExitCode"]) == ("exited", 137), evidence
        assert after["RestartCount"] == before["RestartCount"], evidence

    on_each(steady, fault)


def test_e1_sigkill_of_the_worker_main_process_from_the_host(steady):
    """The crash Docker does restart: the worker's main process SIGKILLed from the
    host by its host pid (as the OOM killer would). docker-init exits with it,
    the restart policy starts the container again; nothing is lost."""

    def fault(lab: EngineLab):
        started = time.monotonic()
        stack = lab.stack
        before, readies = stack.state(WORKER), lab.readies()
        sent, batch = 300, "e1-oom"
        sender = lab.send_in_background(batch, sent)
        assert lab.wait_recorded(batch, 40, timeout=90) >= 40
        os.kill(stack.main_pid(WORKER), signal.SIGKILL)
        killed_at = time.monotonic()
        done_at_kill = lab.recorded(batch)
        assert sender.wait(180) == 0, sender.stderr.read()
        ready = lab.wait_ready(readies, timeout=90)
        ready_at = time.monotonic() - killed_at
        done = lab.wait_drained(batch, sent, timeout=120)
        recovered = time.monotonic() - killed_at
        after = stack.state(WORKER)
        figures = lab.stats(batch, sent)
        lab.row(
            "E1 worker main process SIGKILL from the host (OOM kill)",
            figures,
            f"killed after {done_at_kill} recorded; restarted by the policy (RestartCount "
            f"{before['RestartCount']} -> {after['RestartCount']}), ready {ready_at:.0f} s and batch done "
            f"{recovered:.0f} s after the kill",
            started,
        )
        lab.check(batch, sent, figures)
        assert done == sent
        assert 0 < done_at_kill < sent, "the kill was not mid-batch"
        assert ready is not None, f"the worker never said ready again:\n{lab.worker_log()[-3000:]}"
        assert after["RestartCount"] == before["RestartCount"] + 1, (before, after)
        assert after["Running"]

    on_each(steady, fault)


# --- E2: the broker restarted ---------------------------------------------------------------


def test_e2_broker_restart_mid_batch(steady):
    """`docker compose restart <broker>` while tasks run and wait: nothing is lost,
    and the worker serves again."""

    def fault(lab: EngineLab):
        started = time.monotonic()
        stack = lab.stack
        broker = "redis" if lab.variant == "redis" else "rabbitmq"
        before = stack.state(WORKER)
        sent, batch = 60, "e2-broker"
        lab.send(batch, sent, seconds=1)
        assert lab.wait_recorded(batch, 12, timeout=60) >= 12
        began = time.monotonic()
        done_at_restart = lab.recorded(batch)
        stack.run("restart", broker, timeout=180)
        restart_took = time.monotonic() - began
        done = lab.wait_drained(batch, sent, timeout=VISIBILITY_TIMEOUT + 120)
        recovered = time.monotonic() - began
        serves = lab.serves("e2-after")
        after = stack.state(WORKER)
        restarts = after["RestartCount"] - before["RestartCount"]
        figures = lab.stats(batch, sent)
        lab.row(
            f"E2 docker compose restart {broker} mid-batch",
            figures,
            f"restarted after {done_at_restart} recorded (took {restart_took:.0f} s); batch done {recovered:.0f} s "
            "after the restart began; worker "
            + ("reconnected by itself" if not restarts else f"exited, restarted by the policy {restarts}x"),
            started,
        )
        lab.check(batch, sent, figures)
        assert done == sent
        assert done_at_restart < sent, "the restart was not mid-batch"
        assert serves, f"the worker does not serve after the broker's restart:\n{lab.worker_log()[-3000:]}"

    on_each(steady, fault)


# --- E3: a hung worker ----------------------------------------------------------------------------


def test_e3_hung_worker_is_killed_by_its_healthcheck_and_restarted(steady):
    """SIGSTOP of the celery main process inside the container mid-batch: its
    liveness file goes stale, the healthcheck's `kill -9 -1` ends every process
    but docker-init, which exits with the worker, and `restart: unless-stopped`
    starts the container again. Nothing is lost."""

    def fault(lab: EngineLab):
        started = time.monotonic()
        stack = lab.stack
        before, readies = stack.state(WORKER), lab.readies()
        sent, batch = 200, "e3-hung"
        lab.send(batch, sent, seconds=0.2)
        assert lab.wait_recorded(batch, 20, timeout=60) >= 20
        # Celery's main process, by its host pid: docker-init's child (init: true). From
        # inside, a SIGSTOP to the container's PID 1 would be ignored without init.
        os.kill(stack.main_pid(WORKER), signal.SIGSTOP)
        stopped_at = time.monotonic()
        done_at_stop = lab.recorded(batch)
        # The file is touched every 10 s; the check (every 10 s) kills once it is 60 s old.
        restarted = wait_until(
            lambda: stack.state(WORKER)["RestartCount"] > before["RestartCount"], timeout=DETECTION_BOUND + 30
        )
        restarted_at = time.monotonic() - stopped_at
        ready = lab.wait_ready(readies, timeout=90) if restarted else None
        serving_at = time.monotonic() - stopped_at
        done = lab.wait_drained(batch, sent, timeout=120)
        recovered = time.monotonic() - stopped_at
        after = stack.state(WORKER)
        figures = lab.stats(batch, sent)
        lab.row(
            "E3 hung worker main process (SIGSTOP) in a container",
            figures,
            f"stopped after {done_at_stop} recorded; "
            + (
                f"healthcheck killed it, restarted at {restarted_at:.0f} s (RestartCount "
                f"{before['RestartCount']} -> {after['RestartCount']}), serving again {serving_at:.0f} s, "
                f"batch done {recovered:.0f} s after the SIGSTOP"
                if restarted
                else f"NOT restarted within {restarted_at:.0f} s ({after['Status']}, health "
                f"{(after.get('Health') or {}).get('Status')})"
            ),
            started,
        )
        assert restarted, f"the hung worker was not restarted:\n{after}\n{lab.worker_log()[-2000:]}"
        assert ready is not None, f"the worker never said ready again:\n{lab.worker_log()[-3000:]}"
        lab.check(batch, sent, figures)
        assert done == sent
        assert done_at_stop < sent, "the stop was not mid-batch"

    on_each(steady, fault)


# --- E4: a graceful stop ----------------------------------------------------------------------


def test_e4_compose_stop_is_a_warm_shutdown(steady):
    """`docker compose stop worker-default` while tasks of 2 s run (soft limit 4 s):
    a warm shutdown within stop_grace_period (exit code 0, not 137), the running
    tasks complete, the queued ones wait for the next start.

    On a loaded machine a 2 s task can still pass its soft limit; Celery says so
    in the log, and the task is dead-lettered (kept for a replay) or requeued
    (when its dead letter cannot be stored): a time limit, not the shutdown,
    ended it. Those are counted apart, as E5 does, and reported."""

    def fault(lab: EngineLab):
        started = time.monotonic()
        stack = lab.stack
        grace = int(stack.config()["services"][WORKER]["stop_grace_period"].rstrip("s") or 0)
        sent, batch = 24, f"e4-stop-{uuid.uuid4().hex[:6]}"
        lab.send(batch, sent, seconds=2)
        # The second round of four has started: tasks are mid-run, more are queued.
        assert wait_until(lambda: len(lab.attempts(batch)) >= 6, timeout=60)
        began = time.monotonic()
        stack.run("stop", WORKER, timeout=grace + 60)
        took = time.monotonic() - began
        state, log = stack.state(WORKER), lab.worker_log()
        done_at_stop, at_stop = lab.recorded(batch), lab.stats(batch, sent)
        cut_at_stop = cut_by_the_shutdown(lab, batch, past_time_limit(log, batch))
        queued = lab.queued()
        waiting = queued["ready"] + (queued["landed"] or 0)
        requeued_after_running = waiting - (sent - done_at_stop)
        readies = lab.readies()
        stack.run("start", WORKER)
        ready = lab.wait_ready(readies, timeout=90)
        done = lab.wait_recorded(batch, sent, timeout=90)
        figures = lab.stats(batch, sent)
        limited = past_time_limit(lab.worker_log(), batch)
        dead = {key for key in lab.missing(batch, sent) if key in limited and lab.dead_letters(key)}
        figures["lost"] -= len(dead)
        notes = (
            f"stopped in {took:.0f} s (stop_grace_period {grace} s), exit code {state['ExitCode']}; "
            f"{done_at_stop} done at the stop, {waiting} left queued; started again"
        )
        if limited:
            notes += f"; {len(limited)} passed their time limit under load ({len(dead)} dead-lettered, not lost)"
        lab.row("E4 docker compose stop worker during long tasks", figures, notes, started)
        why = f"took {took:.1f} s\n{cut_short(lab, batch)}"
        assert state["ExitCode"] == 0, f"exit code {state['ExitCode']}:\n{log[-3000:]}"
        assert "Warm shutdown" in log, log[-3000:]
        assert not cut_at_stop, f"cut short by the shutdown: {cut_at_stop}; {at_stop}; {why}"
        assert queued["unacked"] == 0, queued
        assert 0 < done_at_stop < sent
        assert waiting >= sent - done_at_stop - len(limited), queued
        assert ready is not None, f"the worker never said ready again:\n{lab.worker_log()[-3000:]}"
        lab.check(batch, sent, figures)
        assert done + len(dead) == sent, why
        assert not cut_by_the_shutdown(lab, batch, limited), why
        assert figures["duplicates"] <= requeued_after_running + len(limited), f"{figures}; {why}"

    on_each(steady, fault)


def past_time_limit(log: str, batch: str) -> set[str]:
    """The keys of `batch` whose task passed its soft or hard time limit, as Celery logs it."""
    return set(re.findall(rf"(?:Soft|Hard) time limit \(\S+\) exceeded for \S+\[({batch}-\d+)\]", log))


def cut_by_the_shutdown(lab: EngineLab, batch: str, limited: set[str]) -> list[tuple]:
    """Deliveries that did not finish, other than those a time limit ended (`limited`)."""
    return [row for row in lab.attempts(batch) if not row[3] and row[0] not in limited]


def cut_short(lab: EngineLab, batch: str) -> str:
    """For an assertion: the deliveries that did not finish, what the worker said
    about them, its warnings and errors, and where the broker holds messages."""
    unfinished = [row for row in lab.attempts(batch) if not row[3]]
    keys = {row[0] for row in unfinished}
    log = lab.worker_log().splitlines()
    said = [line for line in log if any(key in line for key in keys)]
    said += [line for line in log if re.search(r"WARNING|ERROR|CRITICAL|Traceback|Error:", line)][-30:]
    attempts = [lab.attempts(batch, key) for key in sorted(keys)]
    held = lab.rabbitmq_queues() if lab.variant == "rabbitmq" else lab.queued()
    letters = lab.sql("SELECT task_id, exception FROM ops_deadletter ORDER BY id DESC LIMIT 5")
    return "\n".join([f"unfinished: {attempts}", f"broker holds: {held}", f"dead letters: {letters}", *said])


# --- E5: the worker cut off ------------------------------------------------------------------


CUT_SECONDS = 35


def test_e5_worker_cut_off_its_network_and_reconnected(steady):
    """`docker network disconnect` of the worker container mid-batch, reconnected
    after 35 s: nothing is lost, and it serves again within the bound of the
    partition test in test_liveness.py (60 s after the link returns; 90 s if its
    liveness check restarted it)."""

    def fault(lab: EngineLab):
        started = time.monotonic()
        stack = lab.stack
        container, before = stack.container(WORKER), stack.state(WORKER)
        sent, batch = 400, "e5-cut"
        lab.send(batch, sent, seconds=0.1)
        assert lab.wait_recorded(batch, 40, timeout=60) >= 40
        docker("network", "disconnect", stack.network, container)
        cut_at = time.monotonic()
        done_at_cut = lab.recorded(batch)
        try:
            time.sleep(CUT_SECONDS)
        finally:
            docker("network", "connect", "--alias", WORKER, stack.network, container)
        mended_at = time.monotonic()
        done_at_mend = lab.recorded(batch)
        progressed = wait_until(
            lambda: lab.recorded(batch) > done_at_mend or lab.recorded(batch) == sent,
            timeout=2 * DETECTION_BOUND + 30,
        )
        serves_again = time.monotonic() - mended_at
        done = lab.wait_drained(batch, sent, timeout=180)
        recovered = time.monotonic() - cut_at
        serves = lab.serves("e5-after")
        after = stack.state(WORKER)
        restarts = after["RestartCount"] - before["RestartCount"]
        # A task that waited on the database through the cut outlives its time
        # limit, and a time limit is a failure for good (ops/base.py): when its
        # dead letter could be stored, it is there for a replay, not lost.
        dead = {key: lab.dead_letters(key) for key in lab.missing(batch, sent)}
        dead = {key: rows[0][0] for key, rows in dead.items() if rows}
        figures = lab.stats(batch, sent)
        figures["lost"] -= len(dead)
        lab.row(
            "E5 worker container cut off its network 35 s",
            figures,
            f"cut after {done_at_cut} recorded, {done_at_mend} at the reconnect; served again {serves_again:.0f} s "
            f"after the reconnect, batch done {recovered:.0f} s after the cut; "
            + ("not restarted" if not restarts else f"restarted by its liveness check {restarts}x")
            + (f"; {len(dead)} dead-lettered past the time limit (not lost)" if dead else ""),
            started,
        )
        lab.check(batch, sent, figures)
        assert all("TimeLimitExceeded" in exception for exception in dead.values()), dead
        assert done + len(dead) == sent
        assert done_at_cut < sent, "the cut was not mid-batch"
        assert progressed, f"the worker did not serve again:\n{lab.worker_log()[-3000:]}"
        bound = DETECTION_BOUND + 30 if restarts else DETECTION_BOUND
        assert serves_again <= bound, f"served again {serves_again:.0f} s after the reconnect"
        assert serves, f"the worker does not serve after the cut:\n{lab.worker_log()[-3000:]}"

    on_each(steady, fault)


# --- E6: countdowns and retries across a worker restart ----------------------------------------


DELAYED = "celery_delayed_"  # native delayed delivery's queues (kombu.transport.native_delayed_delivery)


def test_e6_countdowns_and_retries_outlive_a_worker_restart(steady):
    """Tasks sent with a countdown, each then retrying three times after 1 s,
    while the worker restarts: every one runs, each retry once. On RabbitMQ
    (quorum queues, a topic exchange) the countdowns wait in RabbitMQ's own
    delay queues, not unacknowledged in a worker: native delayed delivery."""

    def fault(lab: EngineLab):
        started = time.monotonic()
        stack = lab.stack
        # RabbitMQ: 20 s, binary 10100, 16 s in celery_delayed_4 then 4 s in
        # celery_delayed_2. Redis: at most the lab's longest countdown, which its
        # visibility timeout outlasts (docs/reliability.md, the pitfall).
        # Few enough that none waits long in the worker's reserve once all come
        # due after the restart. On Redis, a message held unacknowledged for the
        # lab's visibility timeout (12 s) runs twice, held for a countdown or
        # behind other tasks alike (docs/reliability.md, the pitfall): 30 tasks
        # did on a loaded machine, once in six runs.
        sent, batch, retries = 12, "e6-delay", 3
        countdown = 20 if lab.variant == "rabbitmq" else MAX_COUNTDOWN
        readies = lab.readies()
        lab.send(batch, sent, countdown=countdown, retries=retries)
        if lab.variant == "rabbitmq":
            # rabbitmqctl's counts of quorum queues lag by up to a tick (QUORUM_TICK).
            def delayed():
                queues = lab.rabbitmq_queues()
                waiting = sum(ready for name, (ready, _) in queues.items() if name.startswith(DELAYED))
                return waiting == sent and queues[QUEUE] == (0, 0)

            assert wait_until(delayed, timeout=12, interval=1), {
                name: counts for name, counts in lab.rabbitmq_queues().items() if any(counts)
            }
        stack.run("restart", WORKER, timeout=120)
        ready = lab.wait_ready(readies, timeout=90)
        done = lab.wait_drained(batch, sent, timeout=countdown + VISIBILITY_TIMEOUT + 90)
        attempts = lab.attempts(batch)
        steps = {(key, step) for key, _, step, _, _ in attempts}
        figures = {**lab.stats(batch, sent), "duplicates": len(attempts) - len(steps)}
        where = "in RabbitMQ's delay queues" if lab.variant == "rabbitmq" else "reserved by the worker"
        lab.row(
            f"E6 countdown {countdown} s + {retries} retries, worker restarted",
            figures,
            f"restarted while all {sent} waited ({where}); "
            f"ready {ready or 0:.0f} s later; batch done {time.monotonic() - started:.0f} s after sending",
            started,
        )
        twice = lab.sql(
            "SELECT key, retries, pid, redelivered, started_at FROM faultlab_attempt a WHERE key LIKE %s "
            "AND (SELECT count(*) FROM faultlab_attempt b WHERE b.key = a.key AND b.retries = a.retries) > 1 "
            "ORDER BY key, retries, id",
            f"{batch}-%",
        )
        assert figures["duplicates"] <= figures["absorbed"] + figures["interrupted"], (figures, twice)
        lab.check(batch, sent, figures)
        assert done == sent
        assert ready is not None, lab.worker_log()[-3000:]
        short = {key for key, _, _, _, _ in attempts if not all((key, step) in steps for step in range(retries + 1))}
        assert not short, f"keys recorded without all {retries} retries: {sorted(short)[:5]}"
        assert "Direct exchanges are not supported" not in lab.worker_log() + stack.logs("web")

    on_each(steady, fault)


# --- E7: past RabbitMQ's delivery limit ---------------------------------------------------------------

# In the web container: a message requeued until RabbitMQ stops delivering it;
# prints the queue's length as KEDA reads it, the deliveries and what
# <queue>.poison then holds.
REQUEUE_UNTIL_DROPPED = """
import os, sys, time
from amqp import Message
from kombu import Connection
queue = sys.argv[1]
with Connection(os.environ["CELERY_BROKER_URL"]) as conn:
    channel = conn.default_channel
    channel.basic_publish(Message("poison"), exchange="tasks", routing_key=queue)
    time.sleep(1)
    # What KEDA's rabbitmq scaler reads over AMQP (mode QueueLength): a passive declare.
    length = channel.queue_declare(queue, passive=True).message_count
    deliveries = 0
    for _ in range(100):
        message = None
        deadline = time.monotonic() + 5
        while message is None and time.monotonic() < deadline:
            message = channel.basic_get(queue)
            time.sleep(0 if message else 0.05)
        if message is None:
            break
        deliveries += 1
        channel.basic_reject(message.delivery_tag, requeue=True)
    parked = channel.queue_declare(queue + ".poison", passive=True).message_count
    print(length, deliveries, parked)
"""


def test_e7_a_message_past_rabbitmqs_delivery_limit_is_parked_not_dropped(labs):
    """RabbitMQ 4 drops a quorum queue's message after 20 redeliveries (requeues,
    crashed consumers). The work queues dead-letter it to <queue>.poison instead,
    which the worker declared (ops/poison.py). On the way, the queue's length as
    KEDA's scaler reads it (a passive declare)."""
    lab = labs["rabbitmq"]
    stack = lab.stack
    assert f"{QUEUE}.poison" in lab.rabbitmq_queues()
    stack.run("stop", WORKER, timeout=120)  # nothing else may take the message
    try:
        out = stack.exec("web", "python", "-c", REQUEUE_UNTIL_DROPPED, QUEUE).stdout
    finally:
        stack.run("start", WORKER, timeout=120)
    length, deliveries, parked = map(int, out.split())
    assert length == 1, out  # KEDA's QueueLength works on a quorum queue
    assert deliveries == 21, out  # the limit (20) was reached, so RabbitMQ gave up on it
    assert parked == 1, out
    stack.exec("rabbitmq", "rabbitmqctl", "-q", "purge_queue", "-p", stack.answers["project_slug"], f"{QUEUE}.poison")
