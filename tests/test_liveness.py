"""A worker never hangs silently: silent broker connections, partitions, liveness.

Booted like tests/test_faults.py (its Lab, faultlab app and small time limits),
with the network faults of tests/network.py:

- a silent broker connection: a proxy between the worker and its broker stops
  forwarding bytes on the open connections, without closing them, while new
  connections still pass;
- hosts on one machine: worker hosts in network namespaces of their own, each
  with its own host name, cut from the broker and the database mid-batch;
- a consumer RabbitMQ stops feeding, its connection alive (ops/stall.py);
- a hung worker main process (SIGSTOP), against each deployment's liveness check.

Every test prints its detection and recovery times and writes a row of the
fault table (.cache/fault-report.md), as the fault tests do.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import test_faults
import tlslab
import yaml
from enginelab.rabbitmq import private_rabbitmq
from network import Host, Link, Network, SilentProxy
from test_faults import QUEUE, VARIANTS, WORKER, children, report

import deploy_files
from helpers import procfile, start, wait_until

# The fault tests' fixtures: a project with faultlab, and a Lab around it.
fault_projects, lab_for = test_faults.fault_projects, test_faults.lab_for

# The bound: a worker notices a dead broker connection within 60 s.
DETECTION_BOUND = 60


# The RabbitMQ compose.yaml runs (4.3), in a container, beside the machine's (3.10).
COMPOSE_RABBITMQ = "rabbitmq-compose"
# The same faults over TLS, verified (ops/tls.py): a private Redis serving TLS
# only, and compose's RabbitMQ on its TLS listener.
REDIS_TLS, RABBITMQ_TLS = "redis-tls", "rabbitmq-compose-tls"


def on_each_broker(group: str, brokers: tuple[str, ...] = ("redis", "rabbitmq")) -> list:
    """A test's variants, each in an xdist group of its own: these tests wait
    out real timeouts (up to a minute each), so they spread over the workers."""
    params = []
    for v in brokers:
        marks = [pytest.mark.boot, pytest.mark.xdist_group(f"liveness-{group}-{v}")]
        params.append(pytest.param(v, id=v, marks=marks))
    return params


def through(url: str, proxy: SilentProxy) -> str:
    """A loopback broker `url` pointed at the proxy instead."""
    return re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{proxy.port}", url, count=1)


@pytest.mark.parametrize(
    "variant", on_each_broker("silent", ("redis", "rabbitmq", COMPOSE_RABBITMQ, REDIS_TLS, RABBITMQ_TLS))
)
def test_silent_broker_connection_is_noticed_and_replaced(lab_for, fault_projects, variant, tmp_path):
    """(1) Mid-batch, the worker's broker connections go silent, not closed: it
    notices within 60 s, logs it, reconnects and serves its queue again by
    itself. None of the batch is lost; duplicates are absorbed.

    Redis: the transport options' socket_timeout and health_check_interval
    (config/settings.py). RabbitMQ: AMQP heartbeats (CELERY_BROKER_HEARTBEAT),
    on the machine's RabbitMQ and on the one compose.yaml runs.
    Only the broker goes through the proxy: the result backend has its own
    timeout (Celery's redis_socket_timeout, 120 s), beyond this test's limits.
    Over TLS, the proxy passes the encrypted bytes on, and the same bounds hold.
    """
    started = time.monotonic()
    tls = None
    if variant in (REDIS_TLS, RABBITMQ_TLS):
        files = tlslab.certificates(tmp_path / "tls")
        tls = (*files["good"], files["ca"])
    with contextlib.ExitStack() as stack:
        if variant in (COMPOSE_RABBITMQ, RABBITMQ_TLS):
            node = stack.enter_context(private_rabbitmq(fault_projects("rabbitmq")[0], tls=tls))
            lab = lab_for("rabbitmq", rabbitmq=node, tls=tls)
            label = f"rabbitmq {node.version}{' TLS' if tls else ''}"
            stack.callback(lab.stop_all)  # the worker before its broker
        elif variant == REDIS_TLS:
            lab, label = lab_for("redis", tls=tls), "redis TLS"
        else:
            lab, label = lab_for(variant), variant
        silent_connection(lab, label, started)


def silent_connection(lab, variant: str, started: float) -> None:
    broker = lab.env["CELERY_BROKER_URL"]
    upstream = ("127.0.0.1", int(re.search(r"127\.0\.0\.1:(\d+)", broker).group(1)))
    proxy = SilentProxy(upstream)
    try:
        worker_env = {**lab.env, "CELERY_BROKER_URL": through(broker, proxy)}
        direct, lab.env = lab.env, worker_env
        worker = lab.ready(lab.start_worker())
        lab.env = direct  # the sender and the checks reach the broker directly
        sent, batch = 300, f"silent-{variant}"
        lab.send(batch, sent, seconds=0.1)
        assert lab.wait_recorded(batch, 20, timeout=60) >= 20
        mark = len(worker.output())
        silenced = proxy.swallow()
        cut_at = time.monotonic()
        done_at_cut = lab.recorded(batch)
        # Redis: kombu drops the consumer connection whose blocking pop is overdue,
        # or a command times out and Celery restarts the consumer. RabbitMQ: the
        # heartbeat check raises, and Celery restarts the consumer.
        noticed = r"dropping stale connection|Connection to broker lost"
        worker.wait_for_log(noticed, timeout=DETECTION_BOUND + 30, start=mark)
        detected = time.monotonic() - cut_at
        done = lab.wait_drained(batch, sent, timeout=120)
        recovered = time.monotonic() - cut_at
        after = lab.send(f"after-{variant}", 20)
        assert lab.wait_recorded(f"after-{variant}", after, timeout=60) == after, worker.output()[-3000:]
        figures = lab.stats(batch, sent)
        timing = f"noticed in {detected:.0f} s, batch done {recovered:.0f} s after the cut"
        print(f"{variant}: {silenced} connections silenced after {done_at_cut} recorded; {timing}; {figures}")
        report(
            "9 silent broker connection mid-batch",
            variant,
            figures,
            f"{silenced} connections silenced after {done_at_cut} recorded; {timing}; served 20 more",
            started,
        )
        assert detected <= DETECTION_BOUND, f"noticed after {detected:.0f} s"
        assert done == sent and figures["lost"] == 0, f"{figures}\n{lab.diagnosis(batch, sent)}"
        assert figures["duplicates"] <= figures["absorbed"] + figures["interrupted"], figures
        assert worker.proc.poll() is None, "the worker exited instead of reconnecting"
        assert proxy.accepted > silenced, "the worker never opened a new connection"
    finally:
        proxy.close()


@pytest.mark.boot
@pytest.mark.xdist_group("liveness-unfed-rabbitmq")
def test_a_consumer_rabbitmq_stops_feeding_is_reconnected(lab_for, fault_projects):
    """Fault 13. Mid-batch, RabbitMQ stops delivering to the worker's consumer while its
    connection stays alive, heartbeats and all: what a partition test once left
    behind after the heal (docs/reliability.md). Here the node suspends the
    consumer's channel process, a stand-in for that state. The worker's
    ops/stall.py notices ready messages that never arrive within 60 s,
    reconnects, and the batch drains: none lost, duplicates absorbed, the same
    worker process serving."""
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        node = stack.enter_context(private_rabbitmq(fault_projects("rabbitmq")[0]))
        lab = lab_for("rabbitmq", rabbitmq=node)
        stack.callback(lab.stop_all)  # the worker before its broker
        worker = lab.ready(lab.start_worker())
        sent, batch = 300, "unfed"
        lab.send(batch, sent, seconds=0.1)
        assert lab.wait_recorded(batch, 20, timeout=60) >= 20
        mark = len(worker.output())
        answer = node.suspend_consumers("cdc", QUEUE)
        cut_at = time.monotonic()
        done_at_cut = lab.recorded(batch)
        assert answer == "[ok]", f"one consumer of {QUEUE} to suspend, not {answer}"
        worker.wait_for_log(r"Consumer stalled: \d+ in default", timeout=DETECTION_BOUND + 40, start=mark)
        detected = time.monotonic() - cut_at
        done = lab.wait_drained(batch, sent, timeout=120)
        recovered = time.monotonic() - cut_at
        figures = lab.stats(batch, sent)
        timing = f"noticed in {detected:.0f} s, batch done {recovered:.0f} s after"
        print(f"unfed consumer after {done_at_cut} recorded; {timing}; {figures}")
        report(
            "13 consumer unfed, connection alive, mid-batch",
            f"rabbitmq {node.version}",
            figures,
            f"channel suspended after {done_at_cut} recorded; {timing}",
            started,
        )
        # Three checks 20 s apart from the last delivery (ops/stall.py), and this test's polling.
        assert detected <= DETECTION_BOUND + 10, f"noticed after {detected:.0f} s"
        assert done == sent and figures["lost"] == 0, f"{figures}\n{lab.diagnosis(batch, sent)}"
        assert figures["duplicates"] <= figures["absorbed"] + figures["interrupted"], figures
        assert worker.proc.poll() is None, "the worker exited instead of reconnecting"


# --- A hung main process, against each deployment's liveness check ------------------------


@dataclass
class LivenessChecks:
    """The liveness command lines of a rendered project's deploy files."""

    watchdog_seconds: int  # systemd: WatchdogSec= of the worker unit
    watchdog_signal: str  # systemd: WatchdogSignal=
    probe: list[str]  # Kubernetes: the worker's livenessProbe command
    healthcheck: list[str]  # compose: the worker's healthcheck, as the engine runs it
    liveness_file: str  # WORKER_LIVENESS_FILE, in the container of both

    @classmethod
    def of(cls, project: Path, queue: str = QUEUE) -> LivenessChecks:
        unit = next((project / "deploy" / "systemd").glob("*-worker@.service")).read_text()
        manifest = yaml.safe_load((project / "deploy" / "kubernetes" / f"worker-{queue}.yaml").read_text())
        (container,) = manifest["spec"]["template"]["spec"]["containers"]
        k8s_env = {item["name"]: item["value"] for item in container["env"]}
        service = deploy_files.load(project)["services"][f"worker-{queue}"]
        compose_env = deploy_files.environment(service)
        assert service.get("init") is True, "without init, `kill -9 -1` cannot end the worker (PID 1)"
        assert compose_env["WORKER_LIVENESS_FILE"] == k8s_env["WORKER_LIVENESS_FILE"]
        # compose interpolates the test ($$ is a literal $) before the engine runs it.
        healthcheck = [deploy_files.interpolate(arg, {}) for arg in deploy_files.healthcheck_argv(service)]
        return cls(
            watchdog_seconds=int(re.search(r"^WatchdogSec=(\d+)$", unit, re.M).group(1)),
            watchdog_signal=re.search(r"^WatchdogSignal=(\w+)$", unit, re.M).group(1),
            probe=container["livenessProbe"]["exec"]["command"],
            healthcheck=healthcheck,
            liveness_file=k8s_env["WORKER_LIVENESS_FILE"],
        )


class NotifySocket:
    """systemd's end of NOTIFY_SOCKET: collects the datagrams a service sends."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.pings: list[float] = []

    def collect(self) -> list[float]:
        """Read what has arrived; returns the monotonic times of WATCHDOG=1 pings so far."""
        while True:
            try:
                message = self.sock.recv(4096)
            except TimeoutError:
                return self.pings
            if b"WATCHDOG=1" in message.split(b"\n"):
                self.pings.append(time.monotonic())

    def silent_for(self) -> float:
        self.collect()
        return time.monotonic() - self.pings[-1] if self.pings else float("inf")

    def close(self) -> None:
        self.sock.close()


def passes(argv: list[str], env: dict, namespace_pid: int | None = None) -> bool:
    """Does a check's command line pass? Run inside a PID namespace when given."""
    if namespace_pid is not None:
        argv = ["nsenter", "--target", str(namespace_pid), "--pid", *argv]
    return subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode == 0


def start_in_pid_namespace(lab, name: str = WORKER):
    """The worker as in a compose container with `init: true`: a PID namespace
    whose PID 1 stands for docker-init, which waits for the worker and exits with it."""
    command = procfile(lab.project)[name]
    init = f"{command} & wait $!"
    service = start(
        f"{name}-{len(lab.workers)}",
        ["unshare", "--pid", "--fork", "--kill-child", "sh", "-c", init],
        lab.project,
        lab.env,
        lab.logdir,
    )
    lab.workers.append(service)
    return service


def namespace_init(service) -> int:
    """The host pid of PID 1 in the namespace `unshare --fork` made."""
    found = wait_until(lambda: children(service.proc.pid), timeout=10)
    assert found, "unshare started no process"
    return min(found)


def celery_main(service) -> int:
    """The host pid of the celery main process under the namespace's init."""
    init = namespace_init(service)
    found = wait_until(lambda: children(init), timeout=10)
    assert found
    return min(found)


@pytest.mark.parametrize("variant", on_each_broker("hung"))
def test_hung_worker_is_restarted_by_every_deployments_liveness_check(lab_for, rendered, namespaces, variant, tmp_path):
    """(4) SIGSTOP the worker's main process mid-batch. Within a minute each
    deployment's check says so: systemd stops getting WATCHDOG=1, the
    Kubernetes livenessProbe and the compose healthcheck fail; the compose
    healthcheck also ends the worker itself, as compose restarts nothing. The
    worker restarted (as systemd, the kubelet or `restart:` would), its messages
    come back, none is lost."""
    started = time.monotonic()
    lab = lab_for(variant)
    checks = LivenessChecks.of(rendered({**VARIANTS[variant], "deploy": ["systemd", "compose", "kubernetes"]}))
    notify = NotifySocket(tmp_path / "notify")
    alive = tmp_path / "worker-alive"
    try:
        lab.env.update(
            NOTIFY_SOCKET=str(notify.path),
            WATCHDOG_USEC=str(checks.watchdog_seconds * 1_000_000),
            WORKER_LIVENESS_FILE=str(alive),
        )
        probe_env = {**lab.env, "WORKER_LIVENESS_FILE": str(alive)}
        worker = start_in_pid_namespace(lab)
        lab.ready(worker)
        init, main = namespace_init(worker), celery_main(worker)
        sent, batch = 200, f"hung-{variant}"
        lab.send(batch, sent, seconds=0.2)
        assert lab.wait_recorded(batch, 20, timeout=60) >= 20
        assert wait_until(lambda: len(notify.collect()) >= 2, timeout=30), "no WATCHDOG=1 pings"
        assert passes(checks.probe, probe_env), "the livenessProbe fails on a live worker"
        assert passes(checks.healthcheck, probe_env, namespace_pid=init), "the healthcheck fails on a live worker"
        assert worker.proc.poll() is None

        os.kill(main, signal.SIGSTOP)
        stopped_at = time.monotonic()
        done_at_stop = lab.recorded(batch)
        bound = checks.watchdog_seconds + DETECTION_BOUND  # a minute of silence, plus the check's own period
        probe_failed = wait_until(lambda: not passes(checks.probe, probe_env), timeout=bound, interval=2)
        probe_at = time.monotonic() - stopped_at
        watchdog_at = None
        if notify.silent_for() >= checks.watchdog_seconds:
            watchdog_at = probe_at
        else:
            wait_until(lambda: notify.silent_for() >= checks.watchdog_seconds, timeout=bound, interval=1)
            watchdog_at = time.monotonic() - stopped_at
        assert probe_failed, f"the livenessProbe still passes {probe_at:.0f} s after the main process stopped"
        assert notify.silent_for() >= checks.watchdog_seconds, "WATCHDOG=1 pings went on from a stopped process"
        # The compose healthcheck fails, and ends the worker: docker-init's stand-in exits with it.
        assert not passes(checks.healthcheck, probe_env, namespace_pid=init)
        ended = wait_until(lambda: worker.proc.poll() is not None, timeout=30)
        assert ended, "the compose healthcheck failed but did not end the hung worker"
        ended_at = time.monotonic() - stopped_at
        print(f"{variant}: probe failed {probe_at:.0f} s, watchdog silent {watchdog_at:.0f} s, ended {ended_at:.0f} s")

        restarted = lab.ready(start_in_pid_namespace(lab))
        done = lab.wait_drained(batch, sent, timeout=120)
        recovered = time.monotonic() - stopped_at
        pings_before = len(notify.collect())
        assert wait_until(lambda: len(notify.collect()) > pings_before, timeout=30), "no pings after the restart"
        assert passes(checks.probe, probe_env)
        figures = lab.stats(batch, sent)
        report(
            "10 hung worker main process (SIGSTOP) mid-batch",
            variant,
            figures,
            f"stopped after {done_at_stop} recorded; livenessProbe failed in {probe_at:.0f} s, "
            f"WATCHDOG=1 silent {checks.watchdog_seconds} s at {watchdog_at:.0f} s, compose healthcheck ended it "
            f"at {ended_at:.0f} s; restarted, batch done {recovered:.0f} s after the stop",
            started,
        )
        assert done == sent and figures["lost"] == 0, f"{figures}\n{lab.diagnosis(batch, sent)}"
        assert figures["duplicates"] <= figures["absorbed"] + figures["interrupted"], figures
        assert restarted.proc.poll() is None
    finally:
        notify.close()


# --- Hosts on one machine: partitions -------------------------------------------------------


@pytest.fixture
def network(namespaces):
    """Hosts of their own (network namespaces), removed after the test."""
    net = Network()
    try:
        yield net
    finally:
        net.close()


@contextlib.contextmanager
def reach(lab, broker: Link, database: Link):
    """Env for a process on the far side of the links: the broker (and Redis
    results) through forwarders on `broker`'s gateway, the database on `database`'s."""
    env, proxies = dict(lab.env), []
    try:
        for key, link in (("CELERY_BROKER_URL", broker), ("CELERY_RESULT_BACKEND", broker), ("DATABASE_URL", database)):
            if key in env:
                match = re.search(r"127\.0\.0\.1:(\d+)", env[key])
                proxy = SilentProxy(("127.0.0.1", int(match.group(1))), listen=(link.gateway, 0))
                proxies.append(proxy)
                env[key] = env[key].replace(match.group(), f"{link.gateway}:{proxy.port}")
        yield env
    finally:
        for proxy in proxies:
            proxy.close()


def start_on(lab, host: Host, hostname: str, env: dict, name: str = WORKER):
    """The Procfile's worker, on `host`, whose host name is `hostname`."""
    command = procfile(lab.project)[name]
    service = start(
        f"{name}-{hostname}", host.command(hostname, ["sh", "-c", f"exec {command}"]), lab.project, env, lab.logdir
    )
    lab.workers.append(service)
    return service


def served_by(worker, batch: str, start: int = 0) -> int:
    """Tasks of `batch` (a regular expression) the worker's log says it ran."""
    return len(re.findall(rf"record\[{batch}-\d+\] succeeded", worker.output()[start:]))


@pytest.mark.parametrize("variant", on_each_broker("partition"))
def test_partition_of_one_worker_host_of_two(lab_for, network, variant):
    """(2) Two worker hosts serve one queue; the broker and the database sit on a
    third (the root namespace). One host is cut off mid-batch of 1,000: the other
    finishes the batch, the cut host's messages come back, and once the link
    returns the cut host serves again within 60 s, by itself."""
    started = time.monotonic()
    lab = lab_for(variant)
    hosts = [network.add_host(), network.add_host()]
    (link_a,), (link_b,) = hosts[0].links, hosts[1].links
    with reach(lab, link_a, link_a) as env_a, reach(lab, link_b, link_b) as env_b:
        alive = lab.logdir / "host-a-alive"
        env_a["WORKER_LIVENESS_FILE"] = str(alive)
        cut = lab.ready(start_on(lab, hosts[0], "host-a", env_a))
        other = lab.ready(start_on(lab, hosts[1], "host-b", env_b))
        assert "default@host-a ready." in cut.output() and "default@host-b ready." in other.output()
        sent, batch = 1000, f"partition-{variant}"
        sender = lab.send_in_background(batch, sent)
        assert lab.wait_recorded(batch, 150, timeout=120) >= 150
        mark_cut, mark_other = len(cut.output()), len(other.output())
        hosts[0].cut()
        cut_at = time.monotonic()
        done_at_cut = lab.recorded(batch)
        assert sender.wait(120) == 0
        # The cut host must not hang silently: it says it lost the broker, or its
        # beats stop and its deployment's liveness check restarts it (a minute
        # without one). Celery's worker-heartbeat event retries its publish for
        # as long as the broker is unreachable, in the event loop: then the beats stop.
        noticed = re.compile(r"dropping stale connection|Connection to broker lost|Cannot connect to")

        def not_silent() -> str | None:
            if noticed.search(cut.output(), mark_cut):
                return "logged it"
            if time.time() - alive.stat().st_mtime >= DETECTION_BOUND:
                return "stopped beating"
            return None

        how = wait_until(not_silent, timeout=DETECTION_BOUND + 30, interval=1)
        detected = time.monotonic() - cut_at
        done = lab.wait_drained(batch, sent, timeout=240)
        finished = time.monotonic() - cut_at
        by_other = served_by(other, batch, mark_other)

        hosts[0].mend()
        mended_at, mended_wall = time.monotonic(), time.time()
        mark_cut = len(cut.output())
        rounds, restarted = 0, None
        # As its deployment would, restart the cut host's worker once its beats
        # have stopped for a minute since the link returned (systemd's WatchdogSec=,
        # the livenessProbe): a worker
        # that met an unrecoverable error (seen: billiard's result pipe garbled by
        # a soft time limit that hit a child as it wrote its result) hangs in its
        # warm shutdown, waiting for that child's result.
        while time.monotonic() - mended_at < 2 * DETECTION_BOUND + 30 and not served_by(cut, r"after-\d+", mark_cut):
            if not restarted and time.time() - max(alive.stat().st_mtime, mended_wall) >= DETECTION_BOUND:
                restarted = time.monotonic() - mended_at
                cut.kill()
                mark_cut = len(cut.output())  # the same log file
                cut = start_on(lab, hosts[0], "host-a", env_a)
                cut.wait_for_log(rf"{QUEUE}@\S+ ready\.", timeout=90, start=mark_cut)
            lab.send(f"after-{rounds}", 8, seconds=0.5)  # both hosts' pools busy: each gets some
            rounds += 1
            time.sleep(4)
        serves_again = time.monotonic() - mended_at
        figures = lab.stats(batch, sent)
        timing = (
            f"cut after {done_at_cut} recorded; the cut host {how} after {detected:.0f} s; the other host "
            f"served {by_other} and the batch was done {finished:.0f} s after the cut; "
            f"the cut host served again {serves_again:.0f} s after the link returned"
            + (f", restarted by its liveness check at {restarted:.0f} s" if restarted else "")
        )
        print(f"{variant}: {timing}; {figures}")
        report("11 partition of one worker host of two, mid-batch", variant, figures, timing, started)
        assert done == sent and figures["lost"] == 0, f"{figures}\n{lab.diagnosis(batch, sent)}"
        assert figures["duplicates"] <= figures["absorbed"] + figures["interrupted"], figures
        assert by_other > 0
        assert how, f"the cut host neither logged the cut nor stopped beating:\n{cut.output()[-3000:]}"
        assert served_by(cut, r"after-\d+", mark_cut), f"the cut host did not serve again:\n{cut.output()[-3000:]}"
        bound = DETECTION_BOUND + 30 if restarted else DETECTION_BOUND  # its minute of silence, then a start
        assert serves_again <= bound, f"the cut host served again after {serves_again:.0f} s"
        assert cut.proc.poll() is None and other.proc.poll() is None


@pytest.mark.parametrize("variant", on_each_broker("web"))
def test_partition_between_web_and_broker(lab_for, network, variant):
    """(3) The web host loses the broker, not the database: a request that queues
    answers 503 within 5 s and saves nothing, and /healthz/ reports the broker
    down within its probe's timeout (compose's healthcheck: 15 s)."""
    started = time.monotonic()
    lab = lab_for(variant)
    host = network.add_host()
    to_broker = network.add_link(host)
    web = deploy_files.load(lab.project)["services"]["web"]
    timeout = deploy_files.seconds(web["healthcheck"]["timeout"])
    with reach(lab, broker=to_broker, database=host.links[0]) as env:
        env["DJANGO_ALLOWED_HOSTS"] = f"{host.links[0].address},testserver"  # faultlab_post_report: testserver
        # compose's web command, gunicorn on 0.0.0.0:8000, in the web host's namespace.
        gunicorn = start("web", host.command("web", web["command"]), lab.project, env, lab.logdir)
        lab.workers.append(gunicorn)
        healthz = f"http://{host.links[0].address}:8000/healthz/"
        assert wait_until(lambda: http_status(healthz) == 200, timeout=60), gunicorn.output()[-3000:]

        def post() -> dict:
            proc = subprocess.run(
                host.command("web", ["python", "manage.py", "faultlab_post_report"]),
                cwd=lab.project, env=env, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr[-3000:]
            return json.loads(proc.stdout.strip().splitlines()[-1])

        accepted = post()
        assert accepted["status"] == 202, accepted

        to_broker.cut()
        began = time.monotonic()
        status = http_status(healthz, timeout=timeout)
        health_seconds = time.monotonic() - began
        refused = post()
        report(
            "12 partition between web and broker",
            variant,
            dict.fromkeys(("sent", "completed", "lost", "duplicates", "absorbed"), "—"),
            f"/healthz/ {status} in {health_seconds:.1f} s; POST /reports/ {refused['status']} in "
            f"{refused['seconds']} s (202 in {accepted['seconds']} s before the cut), "
            f"saved {refused['reports_after'] - refused['reports_before']}",
            started,
        )
        print(f"{variant}: healthz {status} in {health_seconds:.1f} s; POST {refused}; before the cut {accepted}")
        assert status == 503, f"/healthz/ answered {status} in {health_seconds:.1f} s"
        assert health_seconds <= timeout
        assert refused["status"] == 503, refused
        assert refused["seconds"] <= 5, refused
        assert refused["reports_after"] == refused["reports_before"], "the report was saved without its tasks"

        to_broker.mend()
        assert wait_until(lambda: http_status(healthz) == 200, timeout=60), "/healthz/ never recovered"


def http_status(url: str, timeout: float = 10) -> int | None:
    """The status of a GET, or None when nothing answered within `timeout`."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None
