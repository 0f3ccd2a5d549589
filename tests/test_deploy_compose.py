"""compose.yaml, Dockerfile and .dockerignore: valid, linted, and shaped as the
deployment needs, for every variant that generates them.

compose.yaml is checked against the Compose Specification schema vendored in
check-jsonschema, the Dockerfile with hadolint; the rest are assertions on the
resolved file, each of which fails when its feature breaks.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import deploy_files as compose_file
from helpers import QUESTIONS, project_env, run
from variants import MATRIX

BIN = Path(sys.executable).parent
DEFAULT_DEPLOY = QUESTIONS["deploy"]["default"]

# Variants that generate compose.yaml, plus one with a single queue, SQLite,
# no beat and no Flower, which the matrix does not have.
VARIANTS = {name: answers for name, answers in MATRIX.items() if "compose" in answers.get("deploy", DEFAULT_DEPLOY)}
VARIANTS["compose-one-queue-sqlite-bare"] = {
    "queues": "default:2",
    "database": "sqlite",
    "use_beat": False,
    "use_flower": False,
    "deploy": ["compose"],
    "task_time_limit": 30,
    "task_soft_time_limit": 20,
}


class Variant:
    def __init__(self, name, project):
        self.name, self.project = name, project
        self.answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
        self.queues = compose_file.queues_of(self.answers["queues"])
        self.dotenv = compose_file.read_env_file(project / ".env")
        self.compose = compose_file.resolve(project, self.dotenv)
        self.services = self.compose["services"]

    @property
    def backing(self) -> set[str]:
        a = self.answers
        names = set()
        if a["broker"] == "redis" or a["result_backend"] == "redis":
            names.add("redis")
        if a["database"] == "postgresql":
            names.add("postgres")
        if a["broker"] == "rabbitmq":
            names.add("rabbitmq")
        return names

    @property
    def workers(self) -> dict[str, dict]:
        return {q["name"]: self.services[f"worker-{q['name']}"] for q in self.queues}

    @property
    def app_services(self) -> list[str]:
        """Long-running services that run the project's image."""
        names = ["web", *(f"worker-{q['name']}" for q in self.queues)]
        if self.answers["use_beat"]:
            names.append("beat")
        if self.answers["use_flower"]:
            names.append("flower")
        return names


@pytest.fixture(scope="module", params=list(VARIANTS), ids=list(VARIANTS))
def variant(request, rendered):
    return Variant(request.param, rendered(VARIANTS[request.param]))


# --- Validation -------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MATRIX))
def test_files_follow_the_deploy_answer(name, rendered):
    deploy = MATRIX[name].get("deploy", DEFAULT_DEPLOY)
    project = rendered(MATRIX[name])
    image = "compose" in deploy or "kubernetes" in deploy
    assert (project / "compose.yaml").exists() == ("compose" in deploy)
    assert (project / "Dockerfile").exists() == image
    assert (project / ".dockerignore").exists() == image
    assert (project / "deploy" / "kubernetes").exists() == ("kubernetes" in deploy)


def test_compose_file_matches_the_compose_spec_schema(variant):
    out = run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "compose.yaml"],
        variant.project,
        {"PATH": str(BIN)},
    )
    assert "ok -- validation done" in out.stdout


def test_dockerfile_passes_hadolint(variant):
    out = run([str(BIN / "hadolint"), "Dockerfile"], variant.project, {"PATH": str(BIN)})
    assert out.stdout.strip() == "", out.stdout


def test_compose_refuses_to_start_without_the_secrets(variant):
    """Every password is interpolated with ${NAME:?...}: compose fails early without it."""
    for name in ("REDIS_PASSWORD", "POSTGRES_PASSWORD", "RABBITMQ_PASSWORD"):
        if name not in variant.dotenv:
            continue
        without = {k: v for k, v in variant.dotenv.items() if k != name}
        with pytest.raises(compose_file.InterpolationError, match=name):
            compose_file.resolve(variant.project, without)


# --- Dockerfile -----------------------------------------------------------------------


def dockerfile_stages(project: Path) -> tuple[dict, list[list[str]]]:
    """(ARGs before the first FROM, instructions of each stage), continuations joined."""
    text = re.sub(r"\\\n", " ", (project / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    args, stages = {}, []
    for line in lines:
        instruction = line.split()[0].upper()
        if instruction == "FROM":
            stages.append([line])
        elif stages:
            stages[-1].append(line)
        elif instruction == "ARG":
            key, _, value = line.split(None, 1)[1].partition("=")
            args[key] = value
    return args, stages


def test_dockerfile_is_multi_stage_with_uv_and_the_answered_python(variant):
    args, stages = dockerfile_stages(variant.project)
    assert len(stages) >= 2, "a build stage and a runtime stage"
    assert args["PYTHON_VERSION"] == variant.answers["python_version"]
    for stage in stages:
        assert re.match(r"FROM python:\$\{PYTHON_VERSION\}-slim\S* ?", stage[0]), stage[0]
    build, final = stages[0], stages[-1]
    assert any(re.match(r"COPY --from=ghcr\.io/astral-sh/uv:[\d.]+ /uv ", line) for line in build)
    assert any("uv sync --locked --no-dev" in line for line in build)
    assert any("manage.py collectstatic --noinput" in line for line in build)
    # The runtime stage gets the built /app and nothing that builds.
    assert any(line.startswith("COPY --from=build /app /app") for line in final)
    forbidden = re.compile(r"\b(uv|pip|apt-get|apt|apk|gcc|cc|make|build-essential)\b|astral-sh")
    for line in final[1:]:
        if line.startswith(("RUN", "COPY", "ADD")):
            assert not forbidden.search(line.replace("COPY --from=build /app /app", "")), line


def test_dockerfile_runs_as_an_unprivileged_numeric_user(variant):
    _, stages = dockerfile_stages(variant.project)
    final = stages[-1]
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users, "the runtime stage sets USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or int(gid) > 0), users[-1]
    assert any(f"--uid {uid}" in line for line in final if line.startswith("RUN")), "the user exists"
    # Nothing after USER switches back.
    assert final.index(next(line for line in final if line.startswith("USER "))) > max(
        i for i, line in enumerate(final) if line.startswith(("RUN", "COPY"))
    )


def test_dockerfile_cmd_is_exec_form(variant):
    _, stages = dockerfile_stages(variant.project)
    cmds = [line for line in stages[-1] if line.startswith(("CMD", "ENTRYPOINT"))]
    assert cmds
    for line in cmds:
        argv = yaml.safe_load(line.split(None, 1)[1])
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), line


def _collectstatic_variants():
    """One variant per combination of the answers the settings' required variables depend on."""
    seen = {}
    for name, answers in VARIANTS.items():
        key = (answers.get("database", "postgresql"), answers.get("result_backend", "django-db"))
        seen.setdefault(key, name)
    return sorted(seen.values())


@pytest.mark.parametrize("name", _collectstatic_variants())
def test_dockerfile_collectstatic_step_runs(name, rendered, venv, tmp_path):
    """The build's collectstatic RUN line, exactly, with the venv in place of /opt/venv."""
    variant = Variant(name, rendered(VARIANTS[name]))
    _, stages = dockerfile_stages(variant.project)
    (line,) = [line for line in stages[0] if "collectstatic" in line]
    script = line.removeprefix("RUN ").replace("/opt/venv/bin/python", str(venv / "bin" / "python"))
    # The image has no .env (.dockerignore): only the RUN line's variables count.
    env = {k: v for k, v in project_env(venv).items() if not k.startswith(("DJANGO_", "CELERY_", "DATABASE_"))}
    env["DJANGO_STATIC_ROOT"] = str(tmp_path / "static")
    project = tmp_path / "project"
    shutil.copytree(variant.project, project, ignore=shutil.ignore_patterns(".git", "__pycache__"))
    (project / ".env").unlink()
    run(["sh", "-c", script], project, env)
    assert (tmp_path / "static" / "staticfiles.json").exists()


def test_dockerignore_keeps_secrets_and_local_state_out(variant):
    patterns = {
        line.strip()
        for line in (variant.project / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", ".git/", ".venv/", "*.sqlite3", "var/", "staticfiles/"} <= patterns
    assert ".env" in (variant.project / ".gitignore").read_text().split()


# --- Services ---------------------------------------------------------------------------


def test_services_follow_the_answers(variant):
    expected = {"migrate", *variant.app_services, *variant.backing}
    assert set(variant.services) == expected


def test_commands_are_exec_form(variant):
    for name, service in variant.services.items():
        if "command" not in service:
            continue
        command = service["command"]
        assert isinstance(command, list), f"{name}: command must be a list (exec form)"
        assert command[0] not in {"sh", "/bin/sh", "bash"}, f"{name}: a shell would be PID 1"


def test_each_queue_has_its_own_worker_with_its_options(variant):
    for queue in variant.queues:
        compose_file.assert_worker_command(variant.workers[queue["name"]]["command"], queue)


def test_web_runs_gunicorn(variant):
    command = variant.services["web"]["command"]
    assert command[:2] == ["gunicorn", "config.wsgi"]
    assert command[command.index("--bind") + 1] == "0.0.0.0:8000"


def test_migrate_is_a_one_shot_step_before_web_workers_and_beat(variant):
    migrate = variant.services["migrate"]
    assert migrate["command"] == ["python", "manage.py", "migrate", "--noinput"]
    assert migrate["restart"] == "no"
    for name in ["web", *(f"worker-{q['name']}" for q in variant.queues), "beat"]:
        if name not in variant.services:
            continue
        depends = variant.services[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}, name


def test_app_services_wait_for_healthy_backing_services(variant):
    for name in variant.app_services:
        depends = variant.services[name].get("depends_on", {})
        for backing in variant.backing:
            assert depends.get(backing) == {"condition": "service_healthy"}, f"{name} -> {backing}"
    if "postgres" in variant.backing:
        assert variant.services["migrate"]["depends_on"]["postgres"] == {"condition": "service_healthy"}


# --- Healthchecks ------------------------------------------------------------------------


def health(variant, name) -> str:
    return " ".join(compose_file.healthcheck_argv(variant.services[name]))


def test_every_long_running_service_has_a_healthcheck(variant):
    for name, service in variant.services.items():
        if name == "migrate":
            # A one-shot job: service_completed_successfully is its check.
            assert service["healthcheck"] == {"disable": True}
            continue
        check = service.get("healthcheck", {})
        assert not check.get("disable"), name
        assert compose_file.healthcheck_argv(service), name
        assert compose_file.seconds(check["timeout"]) <= compose_file.seconds(check["interval"]), name


def test_worker_healthcheck_tests_the_liveness_file_and_ends_a_hung_worker(variant):
    """ops/liveness.py touches WORKER_LIVENESS_FILE; compose restarts no unhealthy
    container, so the check kills every process but docker-init (`init`), which
    exits with the worker, and `restart:` starts it again. test_liveness.py runs it."""
    for queue in variant.queues:
        worker = variant.workers[queue["name"]]
        argv = compose_file.healthcheck_argv(worker)
        assert argv[:2] == ["/bin/sh", "-c"], "the shell expands $WORKER_LIVENESS_FILE"
        assert """find "$WORKER_LIVENESS_FILE" -newermt '60 seconds ago'""" in argv[2]
        assert argv[2].endswith("kill -9 -1; exit 1")
        assert worker["init"] is True, "without docker-init, celery is PID 1 and `kill -9 -1` spares it"
        assert worker["environment"]["WORKER_LIVENESS_FILE"].startswith("/tmp/")
        assert worker["restart"] in {"always", "unless-stopped"}


def test_beat_healthcheck_pings_beat(variant):
    if not variant.answers["use_beat"]:
        pytest.skip("no beat in this variant")
    assert "--enable-remote-control" in variant.services["beat"]["command"]
    assert "inspect ping -d celerybeat@$HOSTNAME" in health(variant, "beat")


def test_web_healthcheck_asks_healthz_with_an_allowed_host(variant):
    web = variant.services["web"]
    check = health(variant, "web")
    assert "http://127.0.0.1:8000/healthz/" in check
    allowed = compose_file.environment(web)["DJANGO_ALLOWED_HOSTS"].split(",")
    assert re.search(r"'Host': '([^']+)'", check)[1] in allowed


def test_flower_healthcheck(variant):
    if not variant.answers["use_flower"]:
        pytest.skip("no Flower in this variant")
    port = variant.answers["flower_port"]
    assert f"http://127.0.0.1:{port}/flower/healthcheck" in health(variant, "flower")


def test_redis_healthcheck_authenticates_and_checks_for_pong(variant):
    if "redis" not in variant.backing:
        pytest.skip("no Redis in this variant")
    redis = variant.services["redis"]
    argv = compose_file.healthcheck_argv(redis)
    assert argv[:2] == ["/bin/sh", "-c"]
    assert re.fullmatch(r"redis-cli .*\bping \| grep -qx PONG", argv[2]), argv[2]
    assert compose_file.environment(redis)["REDISCLI_AUTH"] == variant.dotenv["REDIS_PASSWORD"]


def test_postgres_healthcheck_uses_pg_isready_over_tcp(variant):
    if "postgres" not in variant.backing:
        pytest.skip("no PostgreSQL in this variant")
    argv = compose_file.healthcheck_argv(variant.services["postgres"])
    assert argv[0] == "pg_isready"
    assert argv[argv.index("-h") + 1] == "127.0.0.1"


def test_rabbitmq_healthcheck(variant):
    if "rabbitmq" not in variant.backing:
        pytest.skip("no RabbitMQ in this variant")
    argv = compose_file.healthcheck_argv(variant.services["rabbitmq"])
    assert argv[0] == "rabbitmq-diagnostics"
    assert variant.services["rabbitmq"]["hostname"] == "rabbitmq"


# --- Start-up, shutdown, scaling --------------------------------------------------------


def test_restart_policies(variant):
    for name, service in variant.services.items():
        expected = {"no"} if name == "migrate" else {"always", "unless-stopped"}
        assert service.get("restart") in expected, name


def test_celery_gets_more_than_the_hard_time_limit_to_stop(variant):
    limit = variant.answers["task_time_limit"]
    for name, service in variant.workers.items():
        assert compose_file.seconds(service["stop_grace_period"]) > limit, name
    web = variant.services["web"]
    graceful = int(web["command"][web["command"].index("--graceful-timeout") + 1])
    assert compose_file.seconds(web["stop_grace_period"]) > graceful


def test_beat_runs_exactly_once(variant):
    if not variant.answers["use_beat"]:
        pytest.skip("no beat in this variant")
    beat = variant.services["beat"]
    # A fixed container name makes `docker compose up --scale beat=2` fail.
    assert beat.get("container_name")
    assert beat.get("deploy", {}).get("replicas", 1) == 1
    assert "scale" not in beat


# --- Network and secrets -------------------------------------------------------------------


def test_only_web_and_flower_are_published_on_loopback(variant):
    published = {name for name, service in variant.services.items() if service.get("ports")}
    assert published == {"web", "flower"} & set(variant.services)
    for name in published:
        for host_ip, _, _ in compose_file.published(variant.services[name]):
            assert host_ip == "127.0.0.1", f"{name} is published beyond the loopback"
    for name in variant.services:
        assert variant.services[name].get("network_mode") != "host", name
    if variant.answers["use_flower"]:
        port = str(variant.answers["flower_port"])
        assert compose_file.published(variant.services["flower"]) == [("127.0.0.1", port, port)]
        env = compose_file.environment(variant.services["flower"])
        assert (env["FLOWER_ADDRESS"], env["FLOWER_PORT"]) == ("0.0.0.0", port)


def test_redis_requires_its_password_keeps_an_aof_and_never_evicts(variant):
    if "redis" not in variant.backing:
        pytest.skip("no Redis in this variant")
    redis = variant.services["redis"]
    command = redis["command"]
    options = dict(zip(command[1::2], command[2::2], strict=False))
    assert command[0] == "redis-server"
    assert options["--requirepass"] == variant.dotenv["REDIS_PASSWORD"]
    assert options["--appendonly"] == "yes"
    assert options["--maxmemory-policy"] == "noeviction"
    assert any(volume.endswith(":/data") and not volume.startswith(("/", ".")) for volume in redis["volumes"])


def test_app_containers_get_production_settings_over_the_dev_env_file(variant):
    assert variant.dotenv["DJANGO_DEBUG"] == "true", "the premise: .env is for development"
    domain = variant.answers["domain_name"]
    for name in ["migrate", *variant.app_services]:
        service = variant.services[name]
        assert service["env_file"] == ".env", name
        env = compose_file.container_env(variant.project, service)
        assert env["DJANGO_DEBUG"] == "false", name
        assert env["DJANGO_ALLOWED_HOSTS"] == domain, name
        assert env["DJANGO_SECRET_KEY"] == variant.dotenv["DJANGO_SECRET_KEY"], name


def test_urls_point_at_the_compose_services_with_their_passwords(variant):
    env = compose_file.container_env(variant.project, variant.services["web"])
    a, slug = variant.answers, variant.answers["project_slug"]
    if a["broker"] == "redis":
        assert env["CELERY_BROKER_URL"] == f"redis://:{variant.dotenv['REDIS_PASSWORD']}@redis:6379/0"
    else:
        password = variant.dotenv["RABBITMQ_PASSWORD"]
        assert env["CELERY_BROKER_URL"] == f"amqp://{slug}:{password}@rabbitmq:5672/{slug}"
        rabbit = compose_file.environment(variant.services["rabbitmq"])
        assert (rabbit["RABBITMQ_DEFAULT_USER"], rabbit["RABBITMQ_DEFAULT_PASS"]) == (slug, password)
        assert rabbit["RABBITMQ_DEFAULT_VHOST"] == slug
    if a["result_backend"] == "redis":
        assert env["CELERY_RESULT_BACKEND"] == f"redis://:{variant.dotenv['REDIS_PASSWORD']}@redis:6379/1"
    else:
        # Celery reads CELERY_RESULT_BACKEND itself, over the django-db setting.
        assert "CELERY_RESULT_BACKEND" not in env
    if a["database"] == "postgresql":
        password = variant.dotenv["POSTGRES_PASSWORD"]
        assert env["DATABASE_URL"] == f"postgres://{slug}:{password}@postgres:5432/{slug}"
        pg = compose_file.environment(variant.services["postgres"])
        assert (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"]) == (slug, password, slug)
    else:
        assert env["DATABASE_URL"].startswith("sqlite:////app/data/")
        for name in ["migrate", *variant.app_services]:
            if name != "flower":
                assert "app-data:/app/data" in variant.services[name]["volumes"], name


def test_no_secret_is_written_into_compose_yaml(variant):
    text = (variant.project / "compose.yaml").read_text()
    for key, value in variant.dotenv.items():
        if key.endswith(("_PASSWORD", "_SECRET_KEY")):
            assert value not in text, key
    assert "${REDIS_PASSWORD" in text or "redis" not in variant.backing


def test_compose_file_is_not_ignored_but_env_is(variant):
    """The project commits compose.yaml and keeps .env out of git."""
    if not (variant.project / ".git").exists():
        pytest.skip("rendered without git")
    ignored = subprocess.run(
        ["git", "check-ignore", ".env", "compose.yaml"], cwd=variant.project, capture_output=True, text=True
    ).stdout.split()
    assert ignored == [".env"]
