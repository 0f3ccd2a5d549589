"""The generated project's GitHub Actions workflows: CI and the weekly
template update. Valid by GitHub's schema and actionlint's checks, shaped
for the variant, and the CI job's own commands pass when run here."""

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deploy_files import queues_of
from helpers import QUESTIONS, REDIS, project_env, redis_database, require, run
from variants import MATRIX

COPIER_YML = QUESTIONS

VARIANTS = [
    "redis-djangodb-postgresql",
    "redis-redis-sqlite",
    "redis-none-sqlite",
    "rabbitmq-djangodb-postgresql",
    "rabbitmq-redis-postgresql",
]
WORKFLOWS = [".github/workflows/ci.yml", ".github/workflows/update.yml"]
TOOLS = Path(sys.executable).parent  # check-jsonschema and jactionlint: the template's dev group


@pytest.fixture(scope="module", params=VARIANTS)
def variant(request, rendered):
    answers = MATRIX[request.param]
    return {"python_version": QUESTIONS["python_version"]["default"], **answers}, rendered(answers)


def load(project: Path, name: str) -> dict:
    return yaml.safe_load((project / ".github/workflows" / name).read_text())


def run_steps(job: dict) -> list[str]:
    return [step["run"] for step in job["steps"] if "run" in step]


def test_workflows_match_githubs_schema(variant):
    _, project = variant
    run(
        [str(TOOLS / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *WORKFLOWS],
        project,
        dict(os.environ),
    )


def test_workflows_pass_actionlint_checks(variant):
    """jactionlint's `correctness` profile is actionlint's checks, shellcheck on
    every `run:` script included; its default profile adds security rules. Pinning
    actions and images to digests is left to the project (Dependabot can do it)."""
    _, project = variant
    if not shutil.which("shellcheck"):
        pytest.fail("shellcheck is missing (apt-get install shellcheck): run: scripts would go unchecked")
    env = {**os.environ, "NO_COLOR": "1"}
    run([str(TOOLS / "jactionlint"), "--profile", "correctness", "--strict-exit", *WORKFLOWS], project, env)
    run(
        [str(TOOLS / "jactionlint"), "-i", "unpinned-uses", "-i", "unpinned-images", "--strict-exit", *WORKFLOWS],
        project,
        env,
    )


def test_ci_workflow_fits_the_variant(variant):
    answers, project = variant
    ci = load(project, "ci.yml")
    assert {"push", "pull_request"} <= set(ci[True])  # PyYAML reads the key `on` as True
    assert ci["env"]["UV_PYTHON"] == answers["python_version"]
    # GitHub's own expressions survive Jinja ({% raw %}).
    assert ci["concurrency"]["group"] == "ci-${{ github.ref }}"

    lint = "\n".join(run_steps(ci["jobs"]["lint"]))
    assert "uv run ruff check" in lint and "uv run ruff format --check" in lint

    test = ci["jobs"]["test"]
    broker = answers.get("broker", "redis")
    results = answers.get("result_backend", "django-db")
    database = answers.get("database", "postgresql")
    expected_services = {"postgres"} if database == "postgresql" else set()
    expected_services |= {"redis"} if "redis" in (broker, results) else set()
    expected_services |= {"rabbitmq"} if broker == "rabbitmq" else set()
    assert set(test.get("services") or {}) == expected_services
    for service in (test.get("services") or {}).values():
        assert "--health-cmd" in service["options"], service  # steps start once it is healthy

    env = test["env"]
    assert env["DJANGO_DEBUG"] == "false"
    assert env["DATABASE_URL"].startswith("postgres://" if database == "postgresql" else "sqlite:")
    assert env["CELERY_BROKER_URL"].startswith("redis://" if broker == "redis" else "amqp://")
    # Celery reads CELERY_RESULT_BACKEND from the environment over the settings.
    assert ("CELERY_RESULT_BACKEND" in env) == (results == "redis")
    assert "DJANGO_SECRET_KEY" not in env  # generated per run, never committed

    steps = "\n".join(run_steps(test))
    for command in (
        "manage.py check --deploy --fail-level WARNING",
        "manage.py makemigrations --check --dry-run",
        "uv run pytest",
        "manage.py celery_healthcheck",
    ):
        assert command in steps
    queues = [queue["name"] for queue in queues_of(answers.get("queues", COPIER_YML["queues"]["default"]))]
    # One worker per queue, named after it, as the Procfile and the deploy files run them.
    assert re.search(r"for queue in ([^;]+); do", steps)[1].split() == queues
    assert 'celery -A config worker -Q "$queue" -n "$queue@%h"' in steps
    # kombu's own tests against ops/transport.py (tests/test_kombu_suite.py runs the step).
    assert ("uv run python tests/kombu_suite.py" in steps) == (broker == "redis")


def test_update_workflow_runs_weekly_fails_on_rejects_and_opens_a_pull_request(variant):
    answers, project = variant
    update = load(project, "update.yml")
    triggers = update[True]
    assert "workflow_dispatch" in triggers
    (schedule,) = triggers["schedule"]
    minute, hour, day, month, weekday = schedule["cron"].split()
    assert (day, month) == ("*", "*") and weekday.isdigit(), "not weekly"
    assert update["permissions"] == {}

    (job,) = update["jobs"].values()
    assert job["permissions"] == {"contents": "write", "pull-requests": "write"}
    names = [step.get("run", step.get("uses", "")) for step in job["steps"]]
    (updating,) = [i for i, text in enumerate(names) if re.search(r"\bcopier update --", text)]
    assert {"--defaults", "--conflict rej", "--trust"} <= set(re.findall(r"--conflict rej|--\w+", names[updating]))
    (rejects,) = [i for i, text in enumerate(names) if ".rej" in text]
    (pull_request,) = [i for i, text in enumerate(names) if text.startswith("peter-evans/create-pull-request@")]
    (lock,) = [i for i, text in enumerate(names) if text == "uv lock"]  # CI installs exactly uv.lock
    suite = [i for i, text in enumerate(names) if "uv run python tests/kombu_suite.py" in text]
    assert updating < rejects < lock < pull_request
    if answers.get("broker", "redis") == "redis":
        # A release that moves kombu's pin runs kombu's tests on the transport before the pull request.
        assert len(suite) == 1 and lock < suite[0] < pull_request and "uv sync" in names[suite[0]]
        assert "redis" in job["services"]
    else:
        assert not suite and "services" not in job
    assert job["steps"][pull_request]["with"]["token"] == "${{ secrets.TEMPLATE_UPDATE_TOKEN || github.token }}"
    assert "exit 1" in names[rejects]


def test_update_workflow_refuses_a_local_template_path(variant, tmp_path):
    """Its first step fails with a clear error when _src_path is a path on someone's machine."""
    _, project = variant
    (check,) = [
        step["run"]
        for step in load(project, "update.yml")["jobs"]["update"]["steps"]
        if "_src_path" in step.get("run", "")
    ]
    answers = tmp_path / ".copier-answers.yml"
    for src, ok in [
        ("gh:acme/copier-django-celery", True),
        ("https://example.com/t.git", True),
        ("/home/me/template", False),
        ("../template", False),
    ]:
        answers.write_text(f"_commit: 0.1.0\n_src_path: {src}\n")
        proc = subprocess.run(["bash", "-e", "-c", check], cwd=tmp_path, capture_output=True, text=True)
        assert (proc.returncode == 0) == ok, (src, proc.stdout)


def end_session(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)


@pytest.mark.boot
@pytest.mark.xdist_group("workflow-steps")
def test_ci_jobs_commands_pass_here(rendered, venv, tmp_path):
    """Run every `run:` step of the CI workflow, in order and with the job's
    environment, on a Redis-only variant: the shared venv stands in for
    `uv sync`, and claimed Redis DBs for the service container."""
    require("Redis", REDIS)
    project = tmp_path / "project"
    shutil.copytree(rendered(MATRIX["redis-redis-sqlite"]), project)
    ci = load(project, "ci.yml")
    github_env = tmp_path / "github_env"
    github_env.touch()
    outputs = {}
    with redis_database(3) as (broker_db, results_db, transport_db), contextlib.ExitStack() as stack:
        for name, job in ci["jobs"].items():
            env = project_env(venv, **{**ci["env"], **job.get("env", {})}, GITHUB_ENV=str(github_env))
            env.pop("DJANGO_SECRET_KEY")  # the workflow makes its own
            if "CELERY_BROKER_URL" in env:
                assert env["CELERY_BROKER_URL"] == "redis://127.0.0.1:6379/0"
                assert env["CELERY_RESULT_BACKEND"] == "redis://127.0.0.1:6379/1"
                env["CELERY_BROKER_URL"] = f"redis://127.0.0.1:6379/{broker_db}"
                env["CELERY_RESULT_BACKEND"] = f"redis://127.0.0.1:6379/{results_db}"
                assert env["REDIS_TEST_URL"] == "redis://127.0.0.1:6379/2"
                env["REDIS_TEST_URL"] = f"redis://127.0.0.1:6379/{transport_db}"
            for step in job["steps"]:
                script = step.get("run", "")
                if not script or script == "uv sync" or "failure()" in step.get("if", ""):
                    continue
                if "tests/kombu_suite.py" in script:
                    continue  # tests/test_kombu_suite.py runs it, against a Redis server of its own
                env.update(line.split("=", 1) for line in github_env.read_text().splitlines() if line)
                # GitHub runs `run:` with bash -eo pipefail; a session lets us end what it left running.
                proc = subprocess.Popen(
                    ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script.replace("uv run ", "")],
                    cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                    start_new_session=True,
                )  # fmt: skip
                stack.callback(end_session, proc.pid)
                outputs[script], _ = proc.communicate(timeout=600)
                assert proc.returncode == 0, f"[{name}] {script}\n{outputs[script][-6000:]}"
    assert "DJANGO_SECRET_KEY=" in github_env.read_text()
    (smoke,) = [output for script, output in outputs.items() if "celery_healthcheck" in script]
    for queue in ("default", "email", "render"):
        assert re.search(rf"^{queue}\s+ok\s+{queue}@", smoke, re.M), smoke
    (tests,) = [output for script, output in outputs.items() if script == "uv run pytest"]
    assert re.search(r"\d+ passed", tests) and "skipped" not in tests, tests
