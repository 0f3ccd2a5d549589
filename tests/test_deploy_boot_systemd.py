"""Boot the systemd deployment from its own unit files.

Each service starts from its unit's exact ExecStart=, with the unit's
Environment= and EnvironmentFile= (app.env from app.env.example, the queue's
env file) and its WorkingDirectory=, with the host paths mapped into a test
directory: the checkout, the shared virtualenv and the state directory. No
command is copied here, so a broken ExecStart= fails these tests.

systemd is not PID 1 on this machine, so the tests rebuild the part of each
unit's sandbox that can break a Python service, from the unit's own lines:
- ProtectSystem=strict and StateDirectory=: a mount namespace where the whole
  file system is read-only except the state directory (and /tmp, which
  PrivateTmp= gives a service);
- CapabilityBoundingSet= (empty): no capabilities at all (setpriv);
- SystemCallFilter=, SystemCallErrorNumber=, RestrictAddressFamilies=,
  NoNewPrivileges= and UMask=: a seccomp filter (sandbox_exec.py).
The rest is checked by systemd-analyze (test_deploy_systemd.py). The services
run as root without capabilities, not as User=: the shared virtualenv's
Python lives under /root.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import secrets
import shutil
import socket
import ssl
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from deploy_host import (
    allowed_syscalls,
    answers,
    command_line,
    expand_specifiers,
    host_paths,
    nginx_command,
    nginx_root,
    parse_env_file,
    parse_unit,
    queue_env_files,
    slug,
    unit_files,
    value,
    values,
)

from helpers import (
    POSTGRES,
    RABBITMQ,
    REDIS,
    ROOT,
    Service,
    free_port,
    once_per_run,
    postgres_database,
    rabbitmq_vhost,
    redis_database,
    require,
    run,
    start,
    wait_for_port,
)
from variants import BOOT_VARIANTS

pytestmark = pytest.mark.boot

HOSTNAME = socket.gethostname()
SLOWTASK = ROOT / "tests" / "fixtures" / "slowtask"
SANDBOX_EXEC = ROOT / "tests" / "sandbox_exec.py"


@dataclass
class Host:
    """A generated project laid out as install.sh leaves a host, under `base`."""

    project: Path
    base: Path
    venv: Path
    app_env: dict[str, str] = field(default_factory=dict)
    services: list[Service] = field(default_factory=list)
    # Each service's METRICS_PORT: a free one in place of the unit's, as the
    # variants' stacks run side by side on one machine.
    metrics_ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        self.slug = slug(self.project)
        self.paths = host_paths(self.project)
        self.app = self.base / "srv" / self.slug
        self.conf = self.base / "etc" / self.slug
        self.state_root = self.base / "state"
        self.state = self.state_root / self.slug
        self.logs = self.base / "logs"
        # The checkout as `git clone` leaves it: no local .env (it is not committed).
        shutil.copytree(self.project, self.app, ignore=shutil.ignore_patterns(".git", "__pycache__", ".env"))
        (self.conf / "queues").mkdir(parents=True)
        for path in queue_env_files(self.project).values():
            shutil.copy(path, self.conf / "queues")
        self.state.mkdir(parents=True, mode=0o700)

    def translate(self, text: str) -> str:
        """Host paths to their places under `base` (the virtualenv is the shared one)."""
        for host, here in (
            (self.paths["venv"], self.venv),
            (self.paths["app"], self.app),
            (self.paths["conf"], self.conf),
            (self.paths["state"], self.state),
        ):
            text = text.replace(host, str(here))
        return text

    def write_app_env(self, **overrides: str) -> None:
        """app.env: the example, with the test's services and secrets. Every
        override but the listed additions must replace a line of the example."""
        example = parse_env_file((self.project / "deploy/systemd/app.env.example").read_text())
        additions = {"FLOWER_PORT", "WEB_BIND"}
        assert set(overrides) - additions <= set(example), set(overrides) - set(example)
        self.app_env = {**example, **overrides}
        (self.conf / "app.env").write_text("".join(f"{key}={val}\n" for key, val in self.app_env.items()))

    def unit(self, name: str) -> dict:
        return parse_unit(unit_files(self.project)[name].read_text())

    def specifiers(self, instance: str | None) -> dict[str, str]:
        found = {"H": HOSTNAME, "S": str(self.state_root)}
        if instance is not None:
            found["i"] = instance
        return found

    def environment(self, unit: dict, instance: str | None = None) -> dict[str, str]:
        """What systemd gives the service: its own few variables, then
        Environment=, then each EnvironmentFile= in order (later ones win)."""
        spec = self.specifiers(instance)
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "USER": self.slug,
            "LOGNAME": self.slug,
            "HOME": str(self.state),
        }
        for line in values(unit, "Service", "Environment"):
            for word in command_line(expand_specifiers(line, spec), {}):
                key, _, val = word.partition("=")
                env[key] = self.translate(val)
        for line in values(unit, "Service", "EnvironmentFile"):
            path = Path(self.translate(expand_specifiers(line, spec)))
            env.update({key: self.translate(val) for key, val in parse_env_file(path.read_text()).items()})
        return env

    def command(self, unit: dict, env: dict[str, str], instance: str | None = None) -> list[str]:
        line = expand_specifiers(value(unit, "Service", "ExecStart"), self.specifiers(instance))
        return [self.translate(arg) for arg in command_line(line, env)]

    def sandboxed(self, unit: dict, argv: list[str]) -> list[str]:
        """`argv` under the unit's sandbox, as far as it can be rebuilt here."""
        assert value(unit, "Service", "ProtectSystem") == "strict"
        assert value(unit, "Service", "CapabilityBoundingSet") == ""
        assert value(unit, "Service", "NoNewPrivileges") == "yes"
        writable = ["/tmp"]
        if value(unit, "Service", "StateDirectory") == self.slug:
            writable.append(str(self.state))
        mounts = "".join(f'mount --bind "{path}" "{path}"; ' for path in writable)
        script = f'set -e; {mounts}mount -o remount,bind,ro /; exec "$@"'
        spec = {
            "allow": sorted(allowed_syscalls(unit)),
            "errno": value(unit, "Service", "SystemCallErrorNumber"),
            "families": value(unit, "Service", "RestrictAddressFamilies").split(),
            "umask": value(unit, "Service", "UMask"),
        }
        return [
            "unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh",
            "setpriv", "--bounding-set=-all", "--inh-caps=-all", "--",
            "/usr/bin/python3", str(SANDBOX_EXEC), json.dumps(spec), "--", *argv,
        ]  # fmt: skip

    def start_unit(self, name: str, instance: str | None = None, label: str | None = None, **extra: str) -> Service:
        unit = self.unit(name)
        env = {**self.environment(unit, instance), **extra}
        if "METRICS_PORT" in env:
            self.metrics_ports[label or name] = free_port()
            env["METRICS_PORT"] = str(self.metrics_ports[label or name])
        argv = self.command(unit, env, instance)
        cwd = Path(self.translate(value(unit, "Service", "WorkingDirectory")))
        service = start(label or name, self.sandboxed(unit, argv), cwd, env, self.logs)
        self.services.append(service)
        return service

    def manage(self, *args: str, **extra: str):
        """manage.py with app.env, as install.sh runs it (systemd-run)."""
        env = {**self.environment({"Service": [("EnvironmentFile", f"{self.paths['conf']}/app.env")]}), **extra}
        return run([str(self.venv / "bin" / "python"), "manage.py", *args], self.app, env, timeout=300)

    def stop_all(self) -> None:
        for service in reversed(self.services):
            if service.proc.poll() is None:
                service.stop(timeout=30)


def get(port: int, path: str, *, host: str, auth: tuple[str, str] | None = None, tls: bool = False):
    """(status, headers, body) of a GET to 127.0.0.1:port."""
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=context)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Host": host}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def wait_listening(service: Service, port: int) -> None:
    try:
        wait_for_port(port, timeout=60, proc=service.proc)
    except AssertionError as error:
        raise AssertionError(f"{service.name}: {error}\n{service.output()[-3000:]}") from None


@contextlib.contextmanager
def services_for(data: dict):
    """Broker, result backend and database URLs of our own for this variant."""
    broker, results = data.get("broker", "redis"), data.get("result_backend", "django-db")
    database = data.get("database", "postgresql")
    urls = {}
    with contextlib.ExitStack() as stack:
        if broker == "redis" or results == "redis":
            require("Redis", REDIS)
            numbers = stack.enter_context(redis_database(3))
            urls["extra_broker"] = f"redis://127.0.0.1:6379/{numbers[2]}"
            if broker == "redis":
                urls["CELERY_BROKER_URL"] = f"redis://127.0.0.1:6379/{numbers[0]}"
            if results == "redis":
                urls["CELERY_RESULT_BACKEND"] = f"redis://127.0.0.1:6379/{numbers[1]}"
        if broker == "rabbitmq":
            require("RabbitMQ", RABBITMQ)
            urls["CELERY_BROKER_URL"] = stack.enter_context(rabbitmq_vhost())
            urls["extra_broker"] = stack.enter_context(rabbitmq_vhost())
        if database == "postgresql":
            require("PostgreSQL", POSTGRES)
            urls["DATABASE_URL"] = stack.enter_context(postgres_database())
        yield urls


@dataclass
class Stack:
    host: Host
    data: dict
    queues: list[str]
    web_port: int
    flower_port: int | None
    flower_auth: tuple[str, str]
    extra_broker: str
    notify_message: bytes
    workers: dict[str, Service]


# The tests of one variant share its stack, on one xdist worker.
@pytest.fixture(
    scope="module",
    params=[pytest.param(name, marks=pytest.mark.xdist_group(f"boot-systemd-{name}")) for name in BOOT_VARIANTS],
)
def stack(request, rendered, venv):
    once_per_run(request, f"boot-systemd-{request.param}")
    project = rendered(BOOT_VARIANTS[request.param])
    data = answers(project)
    # Not under /tmp, which stays writable in the services' namespaces.
    base = Path(tempfile.mkdtemp(prefix="cdc-systemd-", dir="/var/tmp"))
    base.chmod(0o755)  # nginx's workers read the static files, as on a host
    host = Host(project, base, venv)
    try:
        with services_for(data) as urls:
            extra_broker = urls.pop("extra_broker")
            web_port, flower_port = free_port(), free_port()
            flower_auth = ("admin", secrets.token_urlsafe(12))
            overrides = {"DJANGO_SECRET_KEY": secrets.token_urlsafe(50), "WEB_BIND": f"127.0.0.1:{web_port}", **urls}
            if data["use_flower"]:
                overrides.update(FLOWER_PASSWORD=flower_auth[1], FLOWER_PORT=str(flower_port))
            host.write_app_env(**overrides)
            # As install.sh does: migrate, then collectstatic into the checkout.
            host.manage("migrate", "--noinput")
            host.manage("collectstatic", "--noinput")

            workers = {
                queue: host.start_unit(f"{host.slug}-worker@.service", queue, label=f"worker-{queue}")
                for queue in queue_env_files(project)
            }
            # Type=notify: gunicorn must report READY=1 on $NOTIFY_SOCKET.
            notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            notify_path = base / "notify.sock"
            notify.bind(str(notify_path))
            notify_path.chmod(0o777)
            notify.settimeout(90)
            web = host.start_unit(f"{host.slug}-web.service", NOTIFY_SOCKET=str(notify_path))
            if data["use_beat"]:
                host.start_unit(f"{host.slug}-beat.service")
            if data["use_flower"]:
                flower = host.start_unit(f"{host.slug}-flower.service")
            try:
                message = notify.recv(4096)
            except TimeoutError:
                message = b""
            finally:
                notify.close()
            wait_listening(web, web_port)
            for queue, worker in workers.items():
                worker.wait_for_log(rf"{re.escape(queue)}@{re.escape(HOSTNAME)} ready\.", timeout=120)
            if data["use_flower"]:
                wait_listening(flower, flower_port)
            yield Stack(
                host=host,
                data=data,
                queues=list(workers),
                web_port=web_port,
                flower_port=flower_port if data["use_flower"] else None,
                flower_auth=flower_auth,
                extra_broker=extra_broker,
                notify_message=message,
                workers=workers,
            )
            host.stop_all()
    finally:
        for service in host.services:
            if service.proc.poll() is None:
                service.kill()
        shutil.rmtree(base, ignore_errors=True)


def test_each_queue_is_served_by_its_own_worker_node(stack):
    out = stack.host.manage("celery_healthcheck", "--timeout", "60").stdout
    nodes = dict(re.findall(r"^(\S+)\s+ok\s+(\S+)", out, re.M))
    assert nodes == {queue: f"{queue}@{HOSTNAME}" for queue in stack.queues}, out


def test_workers_run_the_queue_options_of_their_env_files(stack):
    for queue, worker in stack.workers.items():
        env = parse_env_file((stack.host.conf / "queues" / f"{queue}.env").read_text())
        pool = {"prefork": "prefork", "threads": "thread"}[env["WORKER_POOL"]]
        banner = worker.wait_for_log(r"\.> concurrency: (\d+) \((\w+)\)", timeout=10)
        assert banner.group(2) == pool, worker.output()[-2000:]
        if env["WORKER_CONCURRENCY"]:
            assert banner.group(1) == env["WORKER_CONCURRENCY"]


def test_web_is_gunicorn_reporting_ready_and_healthy(stack):
    assert stack.notify_message.startswith(b"READY=1"), stack.notify_message
    status, _, body = get(stack.web_port, "/healthz/", host=stack.data["domain_name"])
    assert status == 200, body
    assert b'"status": "ok"' in body


def test_beat_is_running(stack):
    if not stack.data["use_beat"]:
        return
    beat = next(s for s in stack.host.services if s.name.endswith("-beat.service"))
    beat.wait_for_log(r"beat: Starting", timeout=30)
    time.sleep(1)
    assert beat.proc.poll() is None, beat.output()[-3000:]


def test_flower_needs_its_password(stack):
    if not stack.flower_port:
        return
    status, _, _ = get(stack.flower_port, "/flower/", host="127.0.0.1")
    assert status == 401
    status, _, body = get(stack.flower_port, "/flower/", host="127.0.0.1", auth=stack.flower_auth)
    assert status == 200, body[:500]
    # Flower itself serves its metrics without the password: nginx must block them.
    status, _, body = get(stack.flower_port, "/flower/metrics", host="127.0.0.1")
    assert status == 200 and b"flower_" in body
    # Its database lives in the state directory, the only writable path.
    assert list(stack.host.state.glob("flower.db*"))


def test_nginx_in_front_of_web_and_flower(stack, tmp_path):
    """The generated nginx site, live on free ports with a self-signed certificate."""
    host, domain = stack.host, stack.data["domain_name"]
    ports = {"http": free_port(), "https": free_port(), "web": stack.web_port, "flower": stack.flower_port or 0}
    main = nginx_root(host.project, tmp_path / "nginx", app_dir=host.app, ports=ports)
    nginx = start("nginx", nginx_command(main, "-g", "daemon off;"), tmp_path, dict(os.environ), tmp_path / "logs")
    try:
        wait_for_port(ports["https"], proc=nginx.proc)
        status, headers, _ = get(ports["http"], "/reports/", host=domain)
        assert status == 301 and headers["Location"] == f"https://{domain}/reports/"
        status, _, body = get(ports["https"], "/healthz/", host=domain, tls=True)
        assert status == 200, body
        css = host.app / "staticfiles" / "admin" / "css" / "base.css"
        status, headers, body = get(ports["https"], "/static/admin/css/base.css", host=domain, tls=True)
        assert status == 200 and body == css.read_bytes() and headers["Server"].startswith("nginx")
        hashed = next((host.app / "staticfiles" / "admin" / "css").glob("base.[0-9a-f]*.css"))
        status, headers, _ = get(ports["https"], f"/static/admin/css/{hashed.name}", host=domain, tls=True)
        assert status == 200 and headers["Cache-Control"] == "public, max-age=31536000, immutable"
        if stack.flower_port:
            assert get(ports["https"], "/flower/", host=domain, tls=True)[0] == 401
            assert get(ports["https"], "/flower/", host=domain, tls=True, auth=stack.flower_auth)[0] == 200
            for path in ("/flower/metrics", "/flower/metrics?x=1", "/flower//metrics", "/flower/%6detrics"):
                status, _, body = get(ports["https"], path, host=domain, tls=True, auth=stack.flower_auth)
                assert status in (403, 404) and b"flower_" not in body, (path, status)
            assert get(ports["https"], "/flower/healthcheck", host=domain, tls=True)[0] == 200
        # nginx proxies the site's listener only: /metrics is Django's 404 there,
        # and Prometheus scrapes the unit's own listener on 127.0.0.1.
        status, _, body = get(ports["https"], "/metrics", host=domain, tls=True)
        assert status == 404 and b"celery_" not in body, status
        status, _, body = get(host.metrics_ports[f"{host.slug}-web.service"], "/metrics", host=domain)
        assert status == 200 and b"celery_queue_length" in body and b"django_http_requests" in body
    finally:
        nginx.stop(timeout=20)


def test_sigterm_lets_the_running_task_finish(stack, tmp_path):
    """What KillMode=mixed relies on: SIGTERM to the worker's main process
    alone is a warm shutdown, so the running task completes, and the worker
    exits 0. A worker of its own (first queue's unit), on a broker of its own,
    with a test-only slow task copied into the checkout."""
    host, queue = stack.host, stack.queues[0]
    shutil.copytree(SLOWTASK, host.app / "slowtask", dirs_exist_ok=True)
    marks = tmp_path  # under /tmp: writable for every unit (PrivateTmp=)
    extra = {"CELERY_BROKER_URL": stack.extra_broker, "DJANGO_SETTINGS_MODULE": "slowtask.settings"}
    worker = host.start_unit(f"{host.slug}-worker@.service", queue, label="worker-sigterm", **extra)
    try:
        worker.wait_for_log(rf"{re.escape(queue)}@{re.escape(HOSTNAME)} ready\.", timeout=120)
        worker.wait_for_log(r"slowtask\.tasks\.slow", timeout=5)
        send = f"from slowtask.tasks import slow; slow.apply_async(args=[{str(marks)!r}, 6], queue={queue!r})"
        host.manage("shell", "-c", send, **extra)
        deadline = time.monotonic() + 60
        while not (marks / "started").exists():
            assert time.monotonic() < deadline, worker.output()[-3000:]
            time.sleep(0.1)
        signalled = time.time()
        code = worker.stop(timeout=60)
    finally:
        if worker.proc.poll() is None:
            worker.kill()
    log = worker.output()
    assert code == 0, log[-3000:]
    assert (marks / "done").exists(), log[-3000:]
    assert float((marks / "done").read_text()) > signalled
    assert re.search(r"Task slowtask\.tasks\.slow\[[\w-]+\] succeeded", log), log[-3000:]
