"""The generated project on the newest stack it offers, and on the next Django.

Python 3.14 is not on this machine: Debian sid has it (python3.14), so the
project runs in the python:3.14 stand-in, which images.py builds from sid,
with the host network to reach the test services. In there, as a user would:
`uv lock`, `uv sync --locked --no-build` (every dependency from a wheel),
ruff, `check --deploy` with deprecation warnings as errors, `makemigrations
--check` and the project's own suite.

The Django 6.1 canary is the same run with Django 6.1 forced over
django-celery-beat's `Django<6.1` bound by uv's `override-dependencies`:
when it passes, a django-celery-beat release that allows 6.1 is all that
keeps 6.1 from being a choice (docs/questions.md#django-version).
"""

import contextlib
import re
import secrets
import shutil
import sys
from pathlib import Path

import pytest
from enginelab import images
from enginelab.engine import docker, require_engine

from helpers import CACHE, POSTGRES, REDIS, postgres_database, redis_database, require

pytestmark = [pytest.mark.boot, pytest.mark.xdist_group("engine-newest")]

UV = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))

RUNS = {
    # The default series on the newest Python, and the newest series.
    "py3.14-django5.2": {"python_version": "3.14"},
    "py3.14-django6.0": {"python_version": "3.14", "django_version": "6.0"},
    "py3.14-django6.1-canary": {"python_version": "3.14", "django_version": "6.0"},
}
CANARY = 'override-dependencies = ["django>=6.1,<6.2"]  # canary: over django-celery-beat\'s Django<6.1\n'

SCRIPT = """
set -eu
uv lock --quiet
uv sync --locked --no-build --quiet
python - <<'EOF'
import sys, django
print("python", "%d.%d" % sys.version_info[:2])
print("django", django.get_version())
EOF
ruff check --no-cache .
ruff format --check --no-cache .
python -W error::DeprecationWarning manage.py check --deploy --fail-level WARNING
python manage.py makemigrations --check --dry-run
python -m pytest -q -p no:cacheprovider
"""


@pytest.mark.parametrize("name", list(RUNS))
def test_generated_project_passes_its_checks_and_suite(name, rendered, tmp_path):
    require_engine()
    require("Redis", REDIS)
    require("PostgreSQL", POSTGRES)
    answers = RUNS[name]
    project = tmp_path / "project"
    shutil.copytree(rendered(answers), project, ignore=shutil.ignore_patterns(".git", ".venv", "uv.lock"))
    if "canary" in name:
        pyproject = project / "pyproject.toml"
        text = pyproject.read_text()
        assert "[tool.uv]\n" in text
        pyproject.write_text(text.replace("[tool.uv]\n", f"[tool.uv]\n{CANARY}", 1))
    image = images.standin(f"python:{answers['python_version']}-slim-trixie")
    uv_cache = CACHE / "uv-cache-newest"
    uv_cache.mkdir(parents=True, exist_ok=True)

    with contextlib.ExitStack() as stack:
        (number,) = stack.enter_context(redis_database(count=1))
        env = {
            "DATABASE_URL": stack.enter_context(postgres_database()),
            "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
            "REDIS_TEST_URL": f"redis://127.0.0.1:6379/{number}",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DJANGO_DEBUG": "false",
            "DJANGO_ALLOWED_HOSTS": "localhost,127.0.0.1,testserver",
            "FLOWER_USER": "admin",
            "FLOWER_PASSWORD": secrets.token_urlsafe(16),
            # uv: this interpreter only, the venv on PATH, a cache kept between runs.
            "UV_PYTHON": "/usr/local/bin/python3",
            "UV_PYTHON_DOWNLOADS": "never",
            "UV_CACHE_DIR": "/uv-cache",
            "UV_LINK_MODE": "copy",
            "PATH": "/src/.venv/bin:/usr/local/bin:/usr/bin:/bin",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        proc = docker(
            "run",
            "--rm",
            "--network",
            "host",
            "--volume",
            f"{project}:/src",
            "--volume",
            f"{uv_cache}:/uv-cache",
            "--volume",
            f"{UV}:/usr/local/bin/uv:ro",
            "--workdir",
            "/src",
            *[arg for key, value in env.items() for arg in ("--env", f"{key}={value}")],
            image,
            "bash",
            "-c",
            SCRIPT,
            timeout=1200,
            check=False,
        )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-8000:]
    expected_django = "6.1" if "canary" in name else answers.get("django_version", "5.2")
    assert re.search(r"^python 3\.14$", proc.stdout, re.M), output[-2000:]
    assert re.search(rf"^django {re.escape(expected_django)}(\.\d+)?$", proc.stdout, re.M), output[-2000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and "failed" not in summary and "skipped" not in summary, summary
