"""Install every variant the way production does, and start every process kind.

The Dockerfile's build stage and deploy/systemd/install.sh both install with
`uv sync --no-dev --locked`. The shared test virtualenv has the dev tools and
everything they bring along (pytest brings `packaging`, for one), so it cannot
show a runtime dependency that only a dev tool provides. Here each variant gets
a virtualenv of its own, from its own uv.lock, without the dev group, and then
web (gunicorn, as compose and the units run it), one worker per queue, beat,
Flower and the health check run from it against the real services.
"""

import contextlib
import shutil
import sys
from pathlib import Path

import pytest

from helpers import (
    POSTGRES,
    QUESTIONS,
    RABBITMQ,
    REDIS,
    free_port,
    http,
    interpreter,
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
from variants import MATRIX

UV = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
DEV_ONLY = ("pytest", "ruff", "honcho", "pre_commit")
DEFAULT_PYTHON = QUESTIONS["python_version"]["default"]


@pytest.fixture(scope="module", params=[pytest.param(name, marks=[pytest.mark.boot]) for name in MATRIX])
def installed(request, rendered, tmp_path_factory):
    name = request.param
    answers = MATRIX[name]
    project = tmp_path_factory.mktemp(f"nodev-{name}") / "project"
    shutil.copytree(rendered(answers), project, ignore=shutil.ignore_patterns(".git", ".venv"))
    env = project_env(Path(sys.prefix), UV_PYTHON_DOWNLOADS="never")
    env.pop("VIRTUAL_ENV")
    if not (project / "uv.lock").exists():
        run([UV, "lock", "--quiet"], project, env, timeout=300)
    python = interpreter(answers.get("python_version", DEFAULT_PYTHON))
    run([UV, "sync", "--no-dev", "--locked", "--quiet", "--python", python], project, env, timeout=600)
    return name, answers, project


def test_the_production_install_has_no_dev_tools(installed):
    """So that the test below runs without what pytest & co. bring along."""
    _, _, project = installed
    site = next((project / ".venv" / "lib").glob("python3.*/site-packages"))
    present = [tool for tool in DEV_ONLY if (site / tool).exists()]
    assert not present, f"dev tools in the production install: {present}"


def test_every_process_kind_starts_and_serves_from_the_production_install(installed):
    name, answers, project = installed
    broker = answers.get("broker", "redis")
    results = answers.get("result_backend", "django-db")
    database = answers.get("database", "postgresql")
    processes = procfile(project)
    with contextlib.ExitStack() as stack:
        env = {
            "PORT": str(free_port()),
            "FLOWER_PORT": str(free_port()),
            "FLOWER_USER": "admin",
            "FLOWER_PASSWORD": "no-dev-install-test",
            "DATABASE_URL": f"sqlite:///{project}/db.sqlite3",
        }
        if "redis" in (broker, results):
            require("Redis", REDIS)
            numbers = stack.enter_context(redis_database(2 if results == "redis" else 1))
            if broker == "redis":
                env["CELERY_BROKER_URL"] = f"redis://127.0.0.1:6379/{numbers[0]}"
            if results == "redis":
                env["CELERY_RESULT_BACKEND"] = f"redis://127.0.0.1:6379/{numbers[-1]}"
        if broker == "rabbitmq":
            require("RabbitMQ", RABBITMQ)
            env["CELERY_BROKER_URL"] = stack.enter_context(rabbitmq_vhost("nodev"))
        if database == "postgresql":
            require("PostgreSQL", POSTGRES)
            env["DATABASE_URL"] = stack.enter_context(postgres_database("nodev"))
        # The project's own virtualenv first on PATH, nothing of the test runner's.
        env = project_env(project / ".venv", **env)
        logdir = project.parent / "logs"
        running = []
        stack.callback(lambda: [service.kill() for service in running if service.proc.poll() is None])

        run(["python", "manage.py", "migrate", "--no-input"], project, env)
        run(["python", "manage.py", "check", "--deploy", "--fail-level", "ERROR"], project, env)

        # Web as compose.yaml and the web unit run it: gunicorn, not runserver.
        gunicorn = ["gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{env['PORT']}", "--workers", "2"]
        running.append(start("web", gunicorn, project, env, logdir))
        workers = [process for process in processes if process.startswith("worker-")]
        others = [process for process in ("beat", "flower") if process in processes]
        for process in workers + others:
            running.append(start(process, ["sh", "-c", f"exec {processes[process]}"], project, env, logdir))
        started = {service.name: service for service in running}
        for process in workers:
            started[process].wait_for_log(rf"{process.removeprefix('worker-')}@\S+ ready\.", timeout=120)

        check = run(["python", "manage.py", "celery_healthcheck", "--timeout", "30"], project, env, timeout=120)
        served = {line.split()[0]: line.split()[1] for line in check.stdout.splitlines()}
        assert served == {process.removeprefix("worker-"): "ok" for process in workers}, check.stdout

        wait_for_port(int(env["PORT"]), proc=started["web"].proc)
        status, body = http(f"http://127.0.0.1:{env['PORT']}/healthz/")
        assert status == 200, f"{name}: /healthz/ {status} {body}\n{started['web'].output()[-3000:]}"
        if "beat" in started:
            started["beat"].wait_for_log(r"beat: Starting", timeout=60)
        if "flower" in started:
            wait_for_port(int(env["FLOWER_PORT"]), timeout=60, proc=started["flower"].proc)
            assert http(f"http://127.0.0.1:{env['FLOWER_PORT']}/flower/healthcheck")[0] == 200
        dead = {service.name: service.output()[-2000:] for service in running if service.proc.poll() is not None}
        assert not dead, f"exited early: {dead}"
        codes = {service.name: service.stop(timeout=60) for service in running}
        assert all(code == 0 for process, code in codes.items() if process != "flower"), codes


def test_uv_sync_without_dev_dependencies_is_what_production_runs(rendered):
    """The two production installs this test stands for still use --no-dev."""
    project = rendered({})
    install = (project / "deploy" / "systemd" / "install.sh").read_text()
    dockerfile = (project / "Dockerfile").read_text()
    assert "uv sync --no-dev" in install
    assert "uv sync --locked --no-dev" in dockerfile
