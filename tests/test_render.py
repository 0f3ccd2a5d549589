"""Every variant of the render matrix renders clean, lints, compiles, passes
Django's deploy checks and its own test suite."""

import contextlib
import re
import secrets

import pytest
import yaml

from helpers import (
    POSTGRES,
    QUESTIONS,
    REDIS,
    postgres_database,
    project_env,
    project_venv,
    redis_database,
    require,
    run,
)
from variants import MATRIX

JINJA_LEFTOVER = re.compile(r"\{\{|\{%|%\}|\{#")


@pytest.fixture(scope="module", params=list(MATRIX), ids=list(MATRIX))
def variant(request, rendered):
    return request.param, MATRIX[request.param], rendered(MATRIX[request.param])


@pytest.fixture(scope="module")
def venv(variant):
    """The shared virtualenv of the variant's Django series."""
    _, answers, _ = variant
    return project_venv(answers.get("django_version", QUESTIONS["django_version"]["default"]))


def text_files(project):
    for path in sorted(project.rglob("*")):
        if path.is_file() and not {".git", "__pycache__"} & set(path.parts):
            yield path, path.read_text()


def test_renders_without_jinja_leftovers(variant):
    _, _, project = variant
    leftovers = [
        f"{path.relative_to(project)}:{n}: {line.strip()}"
        for path, text in text_files(project)
        for n, line in enumerate(text.splitlines(), 1)
        if JINJA_LEFTOVER.search(line)
        # compose and GitHub Actions use ${{ }} and {{ }} of their own
        and not re.search(r"\$\{\{|\{\{ *\.|github\.|secrets\.|matrix\.|steps\.", line)
        # and Grafana's legends name a series' labels: "{{queue}}"
        and not (path.parent.name == "grafana" and re.search(r'"legendFormat": "[^"]*\{\{\w+\}\}', line))
    ]
    assert not leftovers, "\n".join(leftovers)
    assert not list(project.rglob("*.jinja"))


def test_answers_file_records_the_answers_but_no_secret(variant):
    _, answers, project = variant
    recorded = yaml.safe_load((project / ".copier-answers.yml").read_text())
    for key, value in answers.items():
        if key == "queues":
            continue
        assert recorded[key] == value
    env = (project / ".env").read_text()
    secrets_in_env = re.findall(r"^(?:DJANGO_SECRET_KEY|\w+_PASSWORD)=(\S+)$", env, re.M)
    assert secrets_in_env
    text = (project / ".copier-answers.yml").read_text()
    for value in secrets_in_env:
        assert value not in text
    assert not {k for k in recorded if "secret" in k or "password" in k}


def test_ruff_check_and_format(variant, venv):
    _, _, project = variant
    env = project_env(venv)
    run(["ruff", "check", "--no-cache", "."], project, env)
    run(["ruff", "format", "--check", "--no-cache", "."], project, env)


def test_compileall(variant, venv):
    _, _, project = variant
    run(["python", "-m", "compileall", "-q", "-x", r"\.git|\.venv", "."], project, project_env(venv))


@pytest.fixture(scope="module")
def database_url(variant):
    _, answers, _ = variant
    if answers.get("database", "postgresql") == "postgresql":
        require("PostgreSQL", POSTGRES)
        with postgres_database() as url:
            yield url
    else:
        yield None


def env_for(variant, venv, database_url, **extra):
    _, answers, project = variant
    broker = answers.get("broker", "redis")
    env = {
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0" if broker == "redis" else "amqp://guest:guest@127.0.0.1:5672//",
        "FLOWER_USER": "admin",
        "FLOWER_PASSWORD": secrets.token_urlsafe(16),
    }
    # Celery itself reads CELERY_RESULT_BACKEND from the environment, over the settings.
    if answers.get("result_backend") == "redis":
        env["CELERY_RESULT_BACKEND"] = "redis://127.0.0.1:6379/1"
    if database_url:
        env["DATABASE_URL"] = database_url
    else:
        env["DATABASE_URL"] = f"sqlite:///{project}/test.sqlite3"
    env.update(extra)
    return project_env(venv, **env)


def test_check_deploy(variant, venv, database_url):
    _, _, project = variant
    out = run(
        # Deprecated settings fail here, Django's and the libraries' alike.
        ["python", "-W", "error::DeprecationWarning", "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        project,
        env_for(variant, venv, database_url),
    )
    assert "no issues" in out.stdout


def test_makemigrations_check(variant, venv, database_url):
    _, _, project = variant
    run(
        ["python", "manage.py", "makemigrations", "--check", "--dry-run"],
        project,
        env_for(variant, venv, database_url),
    )


def test_generated_project_tests_pass(variant, venv, database_url):
    _, answers, project = variant
    with contextlib.ExitStack() as stack:
        extra = {}
        if answers.get("broker", "redis") == "redis":
            # tests/test_transport.py needs a Redis database of its own.
            require("Redis", REDIS)
            (number,) = stack.enter_context(redis_database())
            extra["REDIS_TEST_URL"] = f"redis://127.0.0.1:6379/{number}"
        out = run(
            ["python", "-m", "pytest", "-q", "-p", "no:cacheprovider"],
            project,
            env_for(variant, venv, database_url, **extra),
            timeout=600,
        )
    assert re.search(r"\d+ passed", out.stdout)
    assert "failed" not in out.stdout
    assert "skipped" not in out.stdout


def test_conditional_files_follow_the_answers(variant):
    _, answers, project = variant
    use_beat = answers.get("use_beat", True)
    use_flower = answers.get("use_flower", True)
    deploy = answers.get("deploy", ["systemd", "compose"])
    expected = {
        "flowerconfig.py": use_flower,
        "ops/migrations/0002_periodic_schedule.py": use_beat,
        "tests/test_schedule.py": use_beat,
        "compose.yaml": "compose" in deploy,
        "Dockerfile": "compose" in deploy or "kubernetes" in deploy,
        "deploy/systemd": "systemd" in deploy,
        "deploy/kubernetes": "kubernetes" in deploy,
        "deploy/prometheus": "systemd" in deploy or "compose" in deploy,
        "deploy/grafana/dashboard.json": bool(deploy),
        "deploy": bool(deploy),
        "ops/transport.py": answers.get("broker", "redis") == "redis",
        "tests/test_transport.py": answers.get("broker", "redis") == "redis",
    }
    present = {path: (project / path).exists() for path in expected}
    assert present == expected
    procfile = (project / "Procfile").read_text()
    assert ("\nbeat:" in procfile) == use_beat
    assert ("\nflower:" in procfile) == use_flower


@pytest.mark.parametrize("url_kind", ["postgresql", "sqlite"])
@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
def test_either_database_answer_runs_on_either_kind_of_url(database, url_kind, rendered, tmp_path):
    """A DATABASE_URL of the other kind (SQLite for a quick check or a lint job)
    works: engine-specific options go to their engine only."""
    project = rendered(MATRIX["redis-djangodb-postgresql" if database == "postgresql" else "redis-djangodb-sqlite"])
    with contextlib.ExitStack() as stack:
        if url_kind == "postgresql":
            require("PostgreSQL", POSTGRES)
            url = stack.enter_context(postgres_database())
        else:
            url = f"sqlite:///{tmp_path}/check.sqlite3"
        env = project_env(project_venv(), DATABASE_URL=url, CELERY_BROKER_URL="redis://127.0.0.1:6379/0")
        run(["python", "manage.py", "makemigrations", "--check", "--dry-run"], project, env)
        run(["python", "manage.py", "migrate", "--no-input"], project, env)
        out = run(
            [
                "python",
                "manage.py",
                "shell",
                "-c",
                "from django.db import connection as c; c.ensure_connection(); "
                "print(c.vendor, c.settings_dict['OPTIONS'].get('options', ''))",
            ],
            project,
            env,
        )
    vendor, _, options = out.stdout.strip().splitlines()[-1].partition(" ")
    assert vendor == url_kind
    # The PostgreSQL project bounds idle transactions on PostgreSQL, and only there.
    expected = database == "postgresql" and url_kind == "postgresql"
    assert ("idle_in_transaction_session_timeout" in options) is expected
