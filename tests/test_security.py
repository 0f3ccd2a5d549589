"""Security checks on generated projects: Flower's auth and nginx's block of its
metrics, Redis's password in compose, deploy checks and DEBUG, per-project
secrets that stay out of the answers file and survive `copier update`, and
JSON-only serialization (pickle refused by a running worker)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess

import copier
import pytest
import yaml

from deploy_files import read_env_file
from helpers import (
    REDIS,
    ROOT,
    free_port,
    http,
    once_per_run,
    procfile,
    project_env,
    redis_database,
    render,
    require,
    run,
    start,
    wait_for_port,
)
from variants import MATRIX

DEFAULTS = MATRIX["redis-djangodb-postgresql"]  # systemd (nginx) and compose included
SECRET_NAMES = ("DJANGO_SECRET_KEY", "FLOWER_PASSWORD", "REDIS_PASSWORD", "POSTGRES_PASSWORD", "RABBITMQ_PASSWORD")


def status(url: str, **options) -> int:
    return http(url, **options)[0]


# --- Flower, booted from the Procfile ------------------------------------------------------


@pytest.fixture(scope="module")
def booted(request, rendered, venv, tmp_path_factory):
    """The default project's Flower and default-queue worker, on a claimed Redis DB."""
    once_per_run(request, "security-flower")
    require("Redis", REDIS)
    workdir = tmp_path_factory.mktemp("security")
    project = workdir / "project"
    shutil.copytree(rendered(DEFAULTS), project)
    (project / ".env").unlink()
    with redis_database(1) as (number,), contextlib.ExitStack() as stack:
        password = secrets.token_urlsafe(16)
        env = project_env(
            venv,
            DATABASE_URL=f"sqlite:///{workdir}/db.sqlite3",
            CELERY_BROKER_URL=f"redis://127.0.0.1:6379/{number}",
            FLOWER_USER="admin",
            FLOWER_PASSWORD=password,
            FLOWER_PORT=str(free_port()),
            FLOWER_DB=str(workdir / "flower.db"),
        )
        services = {}
        for name in ("flower", "worker-default"):
            command = procfile(project)[name]
            services[name] = start(name, ["sh", "-c", f"exec {command}"], project, env, workdir / "logs")
            stack.callback(services[name].kill)
        wait_for_port(int(env["FLOWER_PORT"]), proc=services["flower"].proc)
        services["worker-default"].wait_for_log(r"default@\S+ ready\.", timeout=90)
        yield {"project": project, "env": env, "services": services, "auth": f"admin:{password}", "workdir": workdir}


# Flower 2.2's routes (flower/urls.py), with the url_prefix.
FLOWER_PAGES = ["/flower/", "/flower/workers", "/flower/worker/x", "/flower/tasks", "/flower/task/x", "/flower/broker"]
FLOWER_API = ["/flower/api/workers", "/flower/api/tasks", "/flower/api/task/types", "/flower/api/queues/length"]
FLOWER_ACTIONS = [  # POST: run a task, stop a worker, revoke a task
    "/flower/api/task/async-apply/ops.tasks.purge_dead_letters",
    "/flower/api/task/send-task/ops.tasks.purge_dead_letters",
    "/flower/api/worker/shutdown/default@x",
    "/flower/api/task/revoke/x",
]


@pytest.mark.boot
@pytest.mark.xdist_group("security")
def test_flower_ui_and_api_require_credentials(booted):
    base = f"http://127.0.0.1:{booted['env']['FLOWER_PORT']}"
    for path in FLOWER_PAGES + FLOWER_API:
        assert status(base + path) == 401, path
        assert status(base + path, auth="admin:wrong-password") == 401, path
    for path in FLOWER_ACTIONS:
        assert status(base + path, method="POST") == 401, path
        assert status(base + path, method="POST", auth="admin:wrong-password") == 401, path
    # The right credentials open them: the 401s above are the auth, not missing pages.
    for path in ("/flower/", "/flower/workers", "/flower/broker", "/flower/api/workers", "/flower/api/tasks"):
        assert status(base + path, auth=booted["auth"]) == 200, path


@pytest.mark.boot
@pytest.mark.xdist_group("security")
def test_flower_metrics_are_not_reachable_through_nginx(booted, tmp_path):
    from deploy_host import nginx_command, nginx_root

    flower_port = int(booted["env"]["FLOWER_PORT"])
    # Flower itself serves its metrics without credentials: the block is nginx's job.
    assert status(f"http://127.0.0.1:{flower_port}/flower/metrics") == 200
    ports = {"http": free_port(), "https": free_port(), "web": free_port(), "flower": flower_port}
    main = nginx_root(booted["project"], tmp_path / "nginx", app_dir=tmp_path / "app", ports=ports)
    nginx = start("nginx", nginx_command(main, "-g", "daemon off;"), tmp_path, dict(os.environ), tmp_path / "logs")
    try:
        wait_for_port(ports["https"], proc=nginx.proc)
        base, host = f"https://127.0.0.1:{ports['https']}", "example.com"
        # nginx proxies Flower: its UI answers, behind the password.
        assert status(base + "/flower/", host=host) == 401
        assert status(base + "/flower/", auth=booted["auth"], host=host) == 200
        for path in (
            "/flower/metrics",
            "/flower/metrics/",
            "/flower//metrics",
            "/flower/%6detrics",
            "/flower/./metrics",
        ):
            assert status(base + path, host=host) in (403, 404), path
            assert status(base + path, auth=booted["auth"], host=host) in (403, 404), path
    finally:
        nginx.stop(timeout=20)


@pytest.mark.boot
@pytest.mark.xdist_group("security")
def test_running_app_accepts_json_only_and_the_worker_refuses_pickle(booted):
    out = run(
        [
            "python",
            "manage.py",
            "shell",
            "-c",
            "import json; from config.celery import app; c = app.conf; print(json.dumps([c.accept_content, "
            "c.result_accept_content, c.task_serializer, c.result_serializer, c.event_serializer]))",
        ],
        booted["project"],
        booted["env"],
    ).stdout
    assert json.loads(out.strip().splitlines()[-1]) == [["json"], ["json"], "json", "json", "json"]
    # A pickled message, as anyone who can write to the broker could send: refused, never run.
    worker = booted["services"]["worker-default"]
    start_at = len(worker.output())
    run(
        [
            "python",
            "manage.py",
            "shell",
            "-c",
            "from config.celery import app; "
            "app.send_task('ops.tasks.purge_dead_letters', args=[0], serializer='pickle', queue='default')",
        ],
        booted["project"],
        booted["env"],
    )
    worker.wait_for_log(r"Refusing to deserialize untrusted content of type pickle", timeout=30, start=start_at)
    assert not re.search(r"purge_dead_letters\[[^\]]+\] (received|succeeded)", worker.output()[start_at:])
    assert worker.proc.poll() is None


# --- Static checks of rendered projects -----------------------------------------------------


def test_no_pickle_anywhere_in_the_generated_code(rendered):
    """Only comments may name pickle: no serializer, accept list or content type does."""
    for answers in (DEFAULTS, MATRIX["rabbitmq-redis-sqlite"], MATRIX["redis-none-postgresql"]):
        project = rendered(answers)
        for path in project.rglob("*"):
            if not path.is_file() or ".git" in path.parts or path.suffix == ".md":
                continue
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                code = line.split("#", 1)[0]
                assert not re.search(r"pickle|x-python-serialize", code, re.I), f"{path}:{number}: {line}"


def test_redis_in_compose_requires_its_password_and_the_healthcheck_authenticates(rendered, tmp_path):
    """compose's own redis command and healthcheck, with the service's own
    environment, run against a real redis-server."""
    from deploy_files import environment, healthcheck_argv, resolve

    project = rendered(DEFAULTS)
    variables = read_env_file(project / ".env")
    redis = resolve(project, variables)["services"]["redis"]
    command = redis["command"]
    assert command[0] == "redis-server"
    assert "--requirepass" in command, command
    assert command[command.index("--requirepass") + 1] == variables["REDIS_PASSWORD"]
    port, data = free_port(), tmp_path / "redis"
    data.mkdir()
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    extra = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(data)]
    proc = subprocess.Popen([server, *command[1:], *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc=proc)
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        anonymous = subprocess.run([cli, "-p", str(port), "ping"], capture_output=True, text=True, timeout=10)
        assert "NOAUTH" in anonymous.stdout + anonymous.stderr, "redis answers without the password"
        argv = healthcheck_argv(redis)
        assert "-p 6379" in argv[-1]
        argv[-1] = argv[-1].replace("-p 6379", f"-p {port}")

        def healthcheck(service: dict) -> int:
            """The healthcheck's exit code, in the container environment `service` gets."""
            env = {key: value for key, value in os.environ.items() if not key.startswith("REDISCLI")}
            env.update(environment(service))
            return subprocess.run(argv, env=env, capture_output=True, timeout=10).returncode

        assert healthcheck(redis) == 0
        # A wrong password in .env, or none in the healthcheck's environment, must not pass.
        wrong = resolve(project, {**variables, "REDIS_PASSWORD": "wrong-password"})["services"]["redis"]
        assert healthcheck(wrong) != 0
        assert healthcheck({**redis, "environment": {}}) != 0
    finally:
        proc.kill()
        proc.wait(10)


def test_check_deploy_passes_and_debug_is_off_unless_asked_for(rendered, venv, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(rendered(DEFAULTS), project)
    (project / ".env").unlink()  # production: the environment only
    env = project_env(
        venv, DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3", CELERY_BROKER_URL="redis://127.0.0.1:6379/0"
    )
    del env["DJANGO_DEBUG"]
    out = run(["python", "manage.py", "check", "--deploy", "--fail-level", "WARNING"], project, env)
    assert "no issues" in out.stdout
    show = ["python", "manage.py", "shell", "-c", "from django.conf import settings; print(settings.DEBUG)"]
    assert run(show, project, env).stdout.strip().splitlines()[-1] == "False"
    assert run(show, project, {**env, "DJANGO_DEBUG": "true"}).stdout.strip().splitlines()[-1] == "True"
    # Every deployment file that sets DJANGO_DEBUG turns it off.
    for path in project.rglob("*"):
        if path.is_file() and path.name != ".env" and "tests" not in path.parts:
            for line in path.read_text(errors="replace").splitlines():
                match = re.search(r"\bDJANGO_DEBUG[=:]\s*\"?(\w+)", line)
                if match and not line.lstrip().startswith("#") and "uv run" not in line:
                    assert match.group(1) == "false", f"{path}: {line}"


def test_each_render_gets_its_own_secrets_and_the_answers_file_keeps_none(tmp_path):
    first, second = (render(tmp_path / name, {"broker": "redis"}) for name in ("one", "two"))
    one, two = read_env_file(first / ".env"), read_env_file(second / ".env")
    for name in ("DJANGO_SECRET_KEY", "FLOWER_PASSWORD", "REDIS_PASSWORD", "POSTGRES_PASSWORD"):
        assert one[name] and two[name] and one[name] != two[name], name
        assert len(one[name]) >= 32, name
    rabbit = read_env_file(render(tmp_path / "three", {"broker": "rabbitmq"}) / ".env")
    assert rabbit["RABBITMQ_PASSWORD"] and rabbit["RABBITMQ_PASSWORD"] not in {one.get("RABBITMQ_PASSWORD")}
    for project, values in ((first, one), (second, two)):
        answers_text = (project / ".copier-answers.yml").read_text()
        answers = yaml.safe_load(answers_text)
        assert not [key for key in answers if re.search(r"secret|password|token", key, re.I)]
        for name in SECRET_NAMES:
            if name in values:
                assert values[name] not in answers_text, name


def test_copier_update_never_changes_an_existing_env(tmp_path):
    """The template as it is (working tree) committed and tagged, a project made
    from it, a new template release: the update applies the release and leaves
    .env byte for byte."""
    git = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com"]
    template = tmp_path / "template"
    junk = shutil.ignore_patterns(".git", ".cache", ".venv", "__pycache__", ".ruff_cache", ".pytest_cache")
    shutil.copytree(ROOT, template, ignore=junk)
    subprocess.run(["git", "init", "--quiet"], cwd=template, check=True)
    subprocess.run([*git, "add", "-A"], cwd=template, check=True)
    subprocess.run([*git, "commit", "--quiet", "-m", "v1.0.0"], cwd=template, check=True)
    subprocess.run([*git, "tag", "v1.0.0"], cwd=template, check=True)
    project = tmp_path / "project"
    render(project, {}, src=str(template), vcs_ref="v1.0.0")
    subprocess.run([*git, "add", "-A"], cwd=project, check=True, capture_output=True)
    subprocess.run([*git, "commit", "--quiet", "-m", "generated"], cwd=project, check=True)
    env_file = project / ".env"
    env_file.write_text(env_file.read_text() + "MY_OWN_SETTING=kept\n")
    before = env_file.read_bytes()

    # v1.0.1 changes .env.jinja (a new variable) and .env.example.jinja.
    for name in (".env.jinja", ".env.example.jinja"):
        path = template / "template" / name
        path.write_text(path.read_text() + "\nADDED_IN_V101=yes\n")
    subprocess.run([*git, "commit", "--quiet", "-am", "v1.0.1"], cwd=template, check=True)
    subprocess.run([*git, "tag", "v1.0.1"], cwd=template, check=True)

    copier.run_update(str(project), defaults=True, overwrite=True, unsafe=True, quiet=True, vcs_ref="v1.0.1")
    assert "ADDED_IN_V101=yes" in (project / ".env.example").read_text(), "the update did not apply"
    assert yaml.safe_load((project / ".copier-answers.yml").read_text())["_commit"] == "v1.0.1"
    assert env_file.read_bytes() == before
