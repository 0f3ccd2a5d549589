"""Boot compose.yaml's own services, natively, from its own command lines.

No container engine runs here, so each service's exact `command:` and
healthcheck `test:` are taken from the rendered compose.yaml (interpolated from
the project's .env as compose does), with the container environment compose
would give (env_file, then `environment:`). Only addresses change: the compose
service names and ports become this machine's services:

- redis: a redis-server started with compose's own redis command (password,
  AOF, noeviction), on a free port, in a temporary directory;
- postgres: a new database on the shared PostgreSQL;
- rabbitmq: a new vhost on the shared RabbitMQ.

A broken command or healthcheck in compose.yaml fails these tests: nothing
here keeps a copy of them.
"""

import contextlib
import re
import shutil
import socket
import time

import pytest
import redis
import yaml

import deploy_files
from helpers import (
    POSTGRES,
    RABBITMQ,
    free_port,
    http,
    once_per_run,
    postgres_database,
    project_env,
    rabbitmq_vhost,
    require,
    run,
    start,
    wait_for_port,
)
from variants import MATRIX

# A Redis broker with PostgreSQL; a RabbitMQ broker with Redis results. Both
# have beat, Flower and three queues, one of them on the threads pool.
VARIANTS = {
    "redis-djangodb-postgresql": MATRIX["redis-djangodb-postgresql"],
    "rabbitmq-redis-postgresql": MATRIX["rabbitmq-redis-postgresql"],
}
HOSTNAME = socket.gethostname()


class ComposeBoot:
    """The compose services of one rendered project, run as local processes."""

    def __init__(self, project, venv, workdir):
        self.project, self.venv, self.workdir = project, venv, workdir
        self.logdir = workdir / "logs"
        self.dotenv = deploy_files.read_env_file(project / ".env")
        self.compose = deploy_files.resolve(project, self.dotenv)
        self.services = self.compose["services"]
        # What each container gets, read while .env exists (compose reads it on the host).
        self.container_env = {name: deploy_files.container_env(project, s) for name, s in self.services.items()}
        self.answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
        self.queues = [q["name"] for q in deploy_files.queues_of(self.answers["queues"])]
        self.rules: list[tuple[re.Pattern, str]] = []
        self.running = {}

    # -- addresses ------------------------------------------------------------------

    def route(self, pattern: str, replacement: str) -> None:
        self.rules.append((re.compile(pattern), replacement))

    def localize(self, text: str) -> str:
        for pattern, replacement in self.rules:
            text = pattern.sub(replacement, text)
        return text

    def argv(self, name: str, key: str = "command") -> list[str]:
        service = self.services[name]
        argv = service[key] if key == "command" else deploy_files.healthcheck_argv(service)
        return [self.localize(arg) for arg in argv]

    def env(self, name: str) -> dict[str, str]:
        localized = {key: self.localize(value) for key, value in self.container_env[name].items()}
        if "WORKER_LIVENESS_FILE" in localized:
            # Each container has a /tmp of its own; here the workers share one.
            localized["WORKER_LIVENESS_FILE"] = str(self.workdir / f"{name}-alive")
        # The shell of CMD-SHELL healthchecks expands $HOSTNAME, as in a container.
        return project_env(self.venv, HOSTNAME=HOSTNAME, **localized)

    # -- processes -------------------------------------------------------------------

    def start(self, name: str):
        self.running[name] = start(name, self.argv(name), self.project, self.env(name), self.logdir)
        return self.running[name]

    def healthcheck(self, name: str, env: dict | None = None):
        argv = self.argv(name, "healthcheck")
        if self.services[name].get("init"):
            # A worker's check ends a hung worker with `kill -9 -1`: every process
            # of its container. On this machine that would be every process, so it
            # runs in an empty PID namespace of its own (test_liveness.py runs it
            # in the worker's).
            argv = ["unshare", "--pid", "--fork", "--kill-child", *argv]
        return run(argv, self.project, env or self.env(name), timeout=60, check=False)

    def wait_healthy(self, name: str, timeout: float = 90.0) -> None:
        """Run the service's healthcheck until it passes, as the engine would."""
        deadline = time.monotonic() + timeout
        while True:
            proc = self.healthcheck(name)
            if proc.returncode == 0:
                return
            service = self.running.get(name)
            if time.monotonic() > deadline or (service and service.proc.poll() is not None):
                log = service.output()[-3000:] if service else ""
                raise AssertionError(
                    f"{name}: healthcheck {self.argv(name, 'healthcheck')} still fails (exit {proc.returncode})\n"
                    f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}\n--- log\n{log}"
                )
            time.sleep(2)

    def kill_all(self):
        for service in self.running.values():
            if service.proc.poll() is None:
                service.kill()


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(name, marks=[pytest.mark.boot, pytest.mark.xdist_group(f"boot-compose-{name}")])
        for name in VARIANTS
    ],
)
def booted(request, rendered, venv, tmp_path_factory):
    name = request.param
    once_per_run(request, f"boot-compose-{name}")
    answers = VARIANTS[name]
    require("PostgreSQL", POSTGRES)
    if answers.get("broker") == "rabbitmq":
        require("RabbitMQ", RABBITMQ)
    workdir = tmp_path_factory.mktemp(f"compose-{name}")
    project = workdir / "project"
    shutil.copytree(rendered(answers), project, ignore=shutil.ignore_patterns(".git"))
    boot = ComposeBoot(project, venv, workdir)
    # The image has no .env (.dockerignore): the containers get compose's environment only.
    (project / ".env").unlink()

    with contextlib.ExitStack() as stack:
        stack.callback(boot.kill_all)
        if "redis" in boot.services:
            port = free_port()
            (workdir / "redis").mkdir()
            argv = [*boot.services["redis"]["command"], "--port", str(port), "--bind", "127.0.0.1"]
            boot.running["redis"] = start("redis", [*argv, "--dir", str(workdir / "redis")], workdir, {}, boot.logdir)
            wait_for_port(port, proc=boot.running["redis"].proc)
            boot.redis_port = port
            boot.route(r"@redis:6379/", f"@127.0.0.1:{port}/")
            boot.route(r"(redis-cli .*)-p 6379\b", rf"\g<1>-p {port}")
        if "postgres" in boot.services:
            boot.route(r"postgres://[^@/]+@postgres:5432/\w+", stack.enter_context(postgres_database("compose")))
        if "rabbitmq" in boot.services:
            boot.route(r"amqp://[^@/]+@rabbitmq:5672/\w+", stack.enter_context(rabbitmq_vhost("compose")))
        web_port, flower_port = free_port(), free_port()
        boot.web_port, boot.flower_port = web_port, flower_port
        boot.route(r"\b(?:0\.0\.0\.0|127\.0\.0\.1):8000\b", f"127.0.0.1:{web_port}")
        if "flower" in boot.services:
            compose_port = str(answers.get("flower_port", 5555))
            boot.route(rf"\b127\.0\.0\.1:{compose_port}\b", f"127.0.0.1:{flower_port}")
            boot.route(rf"^{compose_port}$", str(flower_port))  # FLOWER_PORT
            boot.route(r"^0\.0\.0\.0$", "127.0.0.1")  # FLOWER_ADDRESS: loopback only on a test machine
            boot.route(r"^/app/var/", f"{workdir}/var/")  # FLOWER_DB

        boot.migrate = run(boot.argv("migrate"), project, boot.env("migrate"), timeout=300, check=False)
        assert boot.migrate.returncode == 0, boot.migrate.stdout + boot.migrate.stderr
        for service in boot.services:
            if service.startswith("worker-") or service in {"web", "beat", "flower"}:
                boot.start(service)
        yield boot


def test_addresses_were_localized(booted):
    """Every URL of the app containers now points at this machine's services."""
    env = booted.env("web")
    for key in ("CELERY_BROKER_URL", "DATABASE_URL", "CELERY_RESULT_BACKEND"):
        if key in env:
            assert "@127.0.0.1:" in env[key], f"{key}={env[key]}"


def test_migrate_service_succeeded(booted):
    assert "Applying ops.0001_initial... OK" in booted.migrate.stdout


def test_redis_runs_from_compose_command_with_auth_aof_and_noeviction(booted):
    # Both variants use Redis (broker or results); a skip here would fail CI.
    password = booted.dotenv["REDIS_PASSWORD"]
    client = redis.Redis("127.0.0.1", booted.redis_port, password=password)
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    with pytest.raises(redis.AuthenticationError):
        redis.Redis("127.0.0.1", booted.redis_port).ping()


def test_redis_healthcheck_needs_the_password(booted):
    env = booted.env("redis")
    assert env["REDISCLI_AUTH"] == booted.dotenv["REDIS_PASSWORD"]
    assert booted.healthcheck("redis", env).returncode == 0
    without = {k: v for k, v in env.items() if k != "REDISCLI_AUTH"}
    assert booted.healthcheck("redis", without).returncode != 0, "passes on NOAUTH"
    assert booted.healthcheck("redis", {**env, "REDISCLI_AUTH": "wrong"}).returncode != 0
    # The reason the check greps for PONG: redis-cli itself exits 0 on NOAUTH.
    bare = run(["redis-cli", "-p", str(booted.redis_port), "ping"], booted.project, without, check=False)
    assert bare.returncode == 0 and "NOAUTH" in bare.stdout


def test_database_and_broker_healthcheck_commands_pass(booted):
    """pg_isready and rabbitmq-diagnostics, as compose.yaml spells them, against the local servers."""
    checked = [name for name in ("postgres", "rabbitmq") if name in booted.services]
    assert checked
    for name in checked:
        proc = booted.healthcheck(name, booted.env("web"))
        assert proc.returncode == 0, f"{name}: {proc.stdout}{proc.stderr}"
    if "postgres" in checked:
        assert "accepting connections" in booted.healthcheck("postgres", booted.env("web")).stdout


def test_every_worker_passes_its_compose_healthcheck(booted):
    for queue in booted.queues:
        booted.wait_healthy(f"worker-{queue}")


def test_each_queue_is_served_by_its_own_worker(booted):
    proc = run(
        ["python", "manage.py", "celery_healthcheck", "--timeout", "20"],
        booted.project,
        booted.env("web"),
        timeout=120,
    )
    served = {}
    for line in proc.stdout.splitlines():
        queue, state, node, *_ = line.split()
        assert state == "ok", line
        served[queue] = node
    assert served == {queue: f"{queue}@{HOSTNAME}" for queue in booted.queues}


def test_beat_passes_its_compose_healthcheck(booted):
    booted.wait_healthy("beat")


def test_web_passes_its_compose_healthcheck(booted):
    booted.wait_healthy("web")
    code, body = http(f"http://127.0.0.1:{booted.web_port}/healthz/", host=booted.answers["domain_name"])
    assert code == 200, body
    assert '"database": "ok"' in body and '"broker": "ok"' in body


def test_flower_is_healthy_and_asks_for_credentials(booted):
    booted.wait_healthy("flower")
    url = f"http://127.0.0.1:{booted.flower_port}/flower/"
    assert http(url)[0] == 401
    env = booted.env("flower")
    assert http(url, auth=f"{env['FLOWER_USER']}:{env['FLOWER_PASSWORD']}")[0] == 200


def test_services_stop_cleanly_on_sigterm(booted):
    """Last: SIGTERM to each main process, as `docker compose stop` sends it."""
    codes = {name: booted.running[name].stop(timeout=60) for name in list(booted.running) if name != "redis"}
    assert {name: code for name, code in codes.items() if name != "flower"} == {
        name: 0 for name in codes if name != "flower"
    }, codes
