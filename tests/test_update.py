"""`copier update`: from an earlier release, with changed answers, through a
migration, and from the template sources docs/updating.md warns about.

The earlier release is synthetic: a clone of this template (committed HEAD
plus the working tree) whose first commit, tagged PREVIOUS, differs from the
current template in known ways; its second commit restores the current
template and is tagged with the newest version in CHANGELOG.md.
"""

import difflib
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import copier
import pathspec
import pytest
import yaml
from copier.errors import DirtyLocalWarning, UserMessageError
from enginelab.docs import doc_block
from packaging.version import Version

from helpers import (
    POSTGRES,
    QUESTIONS,
    REDIS,
    ROOT,
    interpreter,
    once_per_run,
    postgres_database,
    procfile,
    project_env,
    redis_database,
    render,
    require,
    run,
    start,
)

COPIER_YML = QUESTIONS
PREVIOUS = "0.0.1"  # never published: only these tests' clones carry it


def released_versions() -> list[str]:
    """The versions of CHANGELOG.md's release headings, newest first."""
    return re.findall(r"^## \[(\d[^\]]*)\] - \d{4}-\d{2}-\d{2}$", (ROOT / "CHANGELOG.md").read_text(), re.M)


CURRENT = released_versions()[0]

# Every deployment target, so their per-queue files go through the updates too.
ANSWERS = {"deploy": ["systemd", "compose", "kubernetes"]}
DEFAULT_QUEUES = COPIER_YML["queues"]["default"]
NEW_QUEUE = "thumbnails"

# Generated once and never updated (.env: compared byte for byte on its own).
SKIPPED_ON_UPDATE = pathspec.PathSpec.from_lines("gitignore", COPIER_YML["_skip_if_exists"])
CONFLICT_MARKER = re.compile(rb"^(<<<<<<<|>>>>>>>) ", re.M)
GIT_IDENTITY = ["-c", "user.name=Update Test", "-c", "user.email=update-test@example.com"]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *GIT_IDENTITY, *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def commit_all(project: Path, message: str) -> None:
    git(project, "add", "-A")
    git(project, "commit", "--quiet", "--allow-empty", "-m", message)


def update(project: Path, **kwargs) -> None:
    """`copier update` as the issue's tests need it: data= really overrides recorded answers."""
    copier.run_update(str(project), overwrite=True, unsafe=True, defaults=True, quiet=True, **kwargs)


def tree(project: Path) -> dict[str, bytes]:
    """The project's files, less git's, caches, uv.lock (made by a task, not the
    template) and the files an update skips."""
    files = {}
    for path in sorted(project.rglob("*")):
        relative = path.relative_to(project).as_posix()
        if not path.is_file() or {".git", "__pycache__"} & set(path.relative_to(project).parts):
            continue
        if relative != "uv.lock" and not SKIPPED_ON_UPDATE.match_file(relative):
            files[relative] = path.read_bytes()
    return files


def tree_diff(actual: dict[str, bytes], expected: dict[str, bytes]) -> str:
    """A readable account of how two trees differ; empty when they are equal."""
    out = [f"only in the project: {path}" for path in sorted(actual.keys() - expected.keys())]
    out += [f"missing from the project: {path}" for path in sorted(expected.keys() - actual.keys())]
    for path in sorted(actual.keys() & expected.keys()):
        if actual[path] != expected[path]:
            out += difflib.unified_diff(
                expected[path].decode(errors="replace").splitlines(),
                actual[path].decode(errors="replace").splitlines(),
                f"expected/{path}",
                f"project/{path}",
                lineterm="",
            )
    return "\n".join(out)


def answers_file(project: Path) -> dict:
    return yaml.safe_load((project / ".copier-answers.yml").read_text())


def rejects_and_conflicts(project: Path) -> list[str]:
    found = []
    for path in project.rglob("*"):
        if ".git" in path.parts or not path.is_file():
            continue
        if path.suffix == ".rej":
            found.append(f"{path.relative_to(project)}: rejected hunks")
        elif CONFLICT_MARKER.search(path.read_bytes()):
            found.append(f"{path.relative_to(project)}: conflict markers")
    return found


# --- The synthetic previous release ------------------------------------------------


def make_previous_release(repo: Path) -> None:
    """What PREVIOUS generated differently from the current template."""
    # 1. The local process file was Procfile.dev (the migration renames it).
    git(repo, "mv", "template/Procfile.jinja", "template/Procfile.dev.jinja")
    # 2. settings.py had another first line (updates apply the template's edits).
    settings = repo / "template/config/settings.py.jinja"
    settings.write_text("# Settings, as copier-django-celery 0.0.1 wrote them.\n" + settings.read_text())
    # 3. There was no update workflow (updates add the template's new files).
    git(repo, "rm", "--quiet", "template/.github/workflows/update.yml.jinja")


@pytest.fixture(scope="session")
def template_repo(tmp_path_factory) -> Path:
    """A clone of this template with two annotated release tags: PREVIOUS, then CURRENT."""
    repo = tmp_path_factory.mktemp("template") / "copier-django-celery"
    # --no-tags: the repository's own release tags would clash with the ones made here.
    git(ROOT, "clone", "--quiet", "--no-checkout", "--no-tags", str(ROOT), str(repo))
    # The working tree as it is (tests run before the lead commits), as Copier
    # itself snapshots a dirty template.
    git(repo, f"--work-tree={ROOT}", "add", "--all")
    git(repo, "commit", "--quiet", "--allow-empty", "-m", "The working tree")
    git(repo, "reset", "--quiet", "--hard")
    make_previous_release(repo)
    git(repo, "commit", "--quiet", "--all", "-m", f"Release {PREVIOUS}")
    git(repo, "tag", "--annotate", PREVIOUS, "-m", f"Release {PREVIOUS}")
    git(repo, "revert", "--no-edit", "HEAD")
    git(repo, "tag", "--annotate", CURRENT, "-m", f"Release {CURRENT}")
    assert git(repo, "status", "--porcelain") == ""
    return repo


def test_versions_are_pep440_and_the_migrations_are_released():
    versions = released_versions()
    assert versions, "CHANGELOG.md has no release heading like '## [0.1.0] - 2026-11-22'"
    assert [Version(v) for v in versions] == sorted((Version(v) for v in versions), reverse=True)
    assert all(str(Version(v)) == v for v in versions), "write versions in PEP 440 normal form"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["version"] == CURRENT, "pyproject.toml's version is not CHANGELOG.md's newest"
    for migration in COPIER_YML["_migrations"]:
        assert Version(migration["version"]) <= Version(CURRENT), migration
        assert Version(migration["version"]) > Version(PREVIOUS), "the update tests would not cross it"


# --- Update from the previous release -------------------------------------------------

NEW_TASK_MODULE = '''"""Housekeeping: the project's own tasks, in a module the template never had."""

from celery import shared_task


@shared_task
def purge_stale_sessions() -> int:
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    deleted, _ = Session.objects.filter(expire_date__lt=timezone.now()).delete()
    return deleted
'''


def make_user_edits(project: Path) -> None:
    """Typical edits: a new task module, a changed setting, an edited README line,
    and a template file the project does without."""
    (project / ".pre-commit-config.yaml").unlink()
    (project / "reports/housekeeping.py").write_text(NEW_TASK_MODULE)
    settings = project / "config/settings.py"
    text = settings.read_text()
    assert text.count('\nLANGUAGE_CODE = "en-us"\n') == 1
    settings.write_text(text.replace('\nLANGUAGE_CODE = "en-us"\n', '\nLANGUAGE_CODE = "de-de"\n'))
    readme = project / "README.md"
    title, _, rest = readme.read_text().partition("\n")
    readme.write_text(f"{title} (internal)\n{rest}")


@pytest.fixture(scope="module")
def updated(request, template_repo, tmp_path_factory):
    """A project copied at PREVIOUS, committed, edited by its user, then updated."""
    once_per_run(request, "update")
    workdir = tmp_path_factory.mktemp("updated")
    project = render(workdir / "project", ANSWERS, src=template_repo, vcs_ref=PREVIOUS)
    assert (project / "Procfile.dev").is_file() and not (project / "Procfile").exists()
    commit_all(project, "Generated")
    env_file = (project / ".env").read_bytes()
    make_user_edits(project)
    commit_all(project, "The user's edits")
    update(project)
    return project, env_file


@pytest.mark.xdist_group("update")
def test_update_leaves_no_rejects_or_conflict_markers(updated):
    project, _ = updated
    assert rejects_and_conflicts(project) == []


@pytest.mark.xdist_group("update")
def test_update_keeps_the_users_edits_and_applies_the_templates(updated):
    project, _ = updated
    assert answers_file(project)["_commit"] == CURRENT
    # The user's edits.
    assert (project / "reports/housekeeping.py").read_text() == NEW_TASK_MODULE
    assert '\nLANGUAGE_CODE = "de-de"\n' in (project / "config/settings.py").read_text()
    assert (project / "README.md").read_text().splitlines()[0].endswith(" (internal)")
    assert not (project / ".pre-commit-config.yaml").exists()
    # The template's changes: a renamed file, an edited file, a new file.
    assert not (project / "Procfile.dev").exists()
    assert "worker-default" in procfile(project)
    assert not (project / "config/settings.py").read_text().startswith("# Settings, as")
    assert (project / ".github/workflows/update.yml").is_file()


@pytest.mark.xdist_group("update")
def test_update_never_touches_env_secrets(updated):
    project, env_file = updated
    assert (project / ".env").read_bytes() == env_file
    assert re.search(rb"^DJANGO_SECRET_KEY=\S{50,}$", env_file, re.M)


@pytest.mark.xdist_group("update")
def test_secrets_live_only_in_files_an_update_skips(updated):
    """A secret rendered into any other file would be rotated by every update."""
    project, env_file = updated
    values = re.findall(rb"^(?:DJANGO_SECRET_KEY|\w+_PASSWORD)=(\S{16,})$", env_file, re.M)
    assert len(values) >= 3
    holders = sorted(
        path.relative_to(project).as_posix()
        for path in project.rglob("*")
        if path.is_file() and ".git" not in path.parts and any(value in path.read_bytes() for value in values)
    )
    assert holders and all(SKIPPED_ON_UPDATE.match_file(holder) for holder in holders), holders


@pytest.mark.xdist_group("update")
def test_updated_project_equals_a_fresh_copy_plus_the_users_edits(updated, template_repo, tmp_path):
    project, _ = updated
    fresh = render(tmp_path / "fresh", ANSWERS, src=template_repo, vcs_ref=CURRENT)
    make_user_edits(fresh)
    assert tree_diff(tree(project), tree(fresh)) == ""


@pytest.mark.boot
@pytest.mark.xdist_group("update")
def test_updated_project_boots_a_worker_per_queue(updated, venv, tmp_path):
    require("Redis", REDIS)
    require("PostgreSQL", POSTGRES)
    project, _ = updated
    workers = {name: cmd for name, cmd in procfile(project).items() if name.startswith("worker-")}
    assert [name.removeprefix("worker-") for name in workers] == ["default", "email", "render"]
    with redis_database() as (number,), postgres_database() as database_url:
        env = project_env(venv, CELERY_BROKER_URL=f"redis://127.0.0.1:6379/{number}", DATABASE_URL=database_url)
        run(["python", "manage.py", "migrate", "--no-input"], project, env)
        services = []
        try:
            for name, command in workers.items():
                services.append(start(name, ["sh", "-c", f"exec {command}"], project, env, tmp_path / "logs"))
            for service in services:
                service.wait_for_log(rf"{service.name.removeprefix('worker-')}@\S+ ready\.", timeout=90)
            out = run(["python", "manage.py", "celery_healthcheck", "--timeout", "30"], project, env).stdout
        finally:
            for service in services:
                service.stop()
    for queue in ("default", "email", "render"):
        assert re.search(rf"^{queue}\s+ok\s+{queue}@", out, re.M), out


# --- Changing the Django series ----------------------------------------------------------------


def locked_version(project: Path, package: str) -> str:
    lock = tomllib.loads((project / "uv.lock").read_text())
    return next(entry["version"] for entry in lock["package"] if entry["name"] == package)


@pytest.mark.boot
@pytest.mark.xdist_group("update")
def test_update_from_django_52_to_60_relocks_migrates_and_passes(template_repo, tmp_path):
    """docs/updating.md#move-to-django-60, run as written: the answer changes, `uv lock`
    moves Django to 6.0, the 5.2 database migrates forward and the suite passes."""
    require("Redis", REDIS)
    require("PostgreSQL", POSTGRES)
    project = render(tmp_path / "project", {"database": "postgresql"}, src=template_repo, vcs_ref=CURRENT)
    uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    with redis_database(count=2) as (broker, tests), postgres_database() as database_url:
        env = project_env(
            Path(sys.prefix),
            DATABASE_URL=database_url,
            CELERY_BROKER_URL=f"redis://127.0.0.1:6379/{broker}",
            REDIS_TEST_URL=f"redis://127.0.0.1:6379/{tests}",
            FLOWER_USER="admin",
            FLOWER_PASSWORD="not-a-secret",
            UV_PYTHON=interpreter(answers_file(project)["python_version"]),
            UV_PYTHON_DOWNLOADS="never",
            UV_PROJECT_ENVIRONMENT=str(tmp_path / "venv"),
        )
        env.pop("VIRTUAL_ENV")
        env["PATH"] = f"{tmp_path / 'venv' / 'bin'}{os.pathsep}{env['PATH']}"
        run([uv, "lock", "--quiet"], project, env, timeout=300)
        run([uv, "sync", "--locked", "--quiet"], project, env, timeout=600)
        assert locked_version(project, "django").startswith("5.2.")
        run(["python", "manage.py", "migrate", "--no-input"], project, env)
        commit_all(project, "Generated, locked")

        # The documented commands, as written, with copier and uv on PATH.
        env["PATH"] = f"{env['PATH']}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{Path(uv).parent}"
        out = run(["bash", "-euo", "pipefail", "-c", doc_block("updating.md", "django-60")], project, env, timeout=1200)
        assert answers_file(project)["django_version"] == "6.0"
        assert '"django>=6.0,<6.1"' in (project / "pyproject.toml").read_text()
        assert locked_version(project, "django").startswith("6.0.")
        unapplied = run(["python", "manage.py", "showmigrations", "--plan"], project, env).stdout
        assert "[ ]" not in unapplied and "[X]" in unapplied, unapplied
    summary = out.stdout.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and "failed" not in summary and "skipped" not in summary, out.stdout


# --- The migration -----------------------------------------------------------------------

USER_PROCESS = "tailwind: npx @tailwindcss/cli -i assets/app.css -o static/app.css --watch\n"


def test_migration_carries_the_users_edits_into_the_renamed_file(template_repo, tmp_path, capfd):
    """Procfile.dev → Procfile keeps an added process, even when the same update
    changes the file (a new queue's worker). Without the migration Copier drops it."""
    project = render(tmp_path / "project", {}, src=template_repo, vcs_ref=PREVIOUS)
    commit_all(project, "Generated")
    with (project / "Procfile.dev").open("a") as procfile_dev:
        procfile_dev.write(USER_PROCESS)
    commit_all(project, "Run the CSS watcher too")
    queues = f"{DEFAULT_QUEUES},{NEW_QUEUE}:3"
    capfd.readouterr()
    update(project, data={"queues": queues})

    assert "Procfile.dev became Procfile, with your edits." in capfd.readouterr().err
    assert not (project / "Procfile.dev").exists()
    fresh = render(tmp_path / "fresh", {"queues": queues}, src=template_repo, vcs_ref=CURRENT)
    assert (project / "Procfile").read_text() == (fresh / "Procfile").read_text() + USER_PROCESS
    assert rejects_and_conflicts(project) == []

    # Run twice (say, after `git checkout .` and another update), it changes nothing more.
    merged = (project / "Procfile").read_bytes()
    script = template_repo / "hooks/migrations/renamed_file.py"
    env = {**os.environ, "VERSION_FROM": PREVIOUS}
    subprocess.run(
        [sys.executable, str(script), "Procfile.dev", "Procfile", f"--template={template_repo}"],
        cwd=project, env=env, check=True, capture_output=True,
    )  # fmt: skip
    assert (project / "Procfile").read_bytes() == merged


def test_migration_leaves_inline_conflicts_when_both_sides_changed_a_line(template_repo, tmp_path, capfd):
    project = render(tmp_path / "project", {}, src=template_repo, vcs_ref=PREVIOUS)
    commit_all(project, "Generated")
    procfile_dev = project / "Procfile.dev"
    text = procfile_dev.read_text()
    assert " -Q default -n default@%h -c 4 " in text
    procfile_dev.write_text(text.replace(" -Q default -n default@%h -c 4 ", " -Q default -n default@%h -c 6 "))
    commit_all(project, "More default workers")
    capfd.readouterr()
    update(project, data={"queues": DEFAULT_QUEUES.replace("default:4", "default:2")})

    assert "resolve the conflict markers in Procfile" in capfd.readouterr().err
    merged = (project / "Procfile").read_text()
    assert re.search(
        r"^<<<<<<< before updating\n.* -c 6 .*\n=======\n.* -c 2 .*\n>>>>>>> after updating$", merged, re.M
    ), merged


# --- Changing an answer on update ----------------------------------------------------------


def hunks_not_about(word: str, old: bytes, new: bytes) -> list[str]:
    """The changed regions of a file (3 lines of context) that add no line mentioning `word`."""
    a, b = old.decode().splitlines(), new.decode().splitlines()
    bad = []
    for group in difflib.SequenceMatcher(None, a, b, autojunk=False).get_grouped_opcodes(3):
        added = [line for tag, _, _, j1, j2 in group if tag != "equal" for line in b[j1:j2]]
        if not any(word in line.lower() for line in added):
            bad.append("\n".join(f"{tag}: {a[i1:i2]} -> {b[j1:j2]}" for tag, i1, i2, j1, j2 in group if tag != "equal"))
    return bad


def test_adding_then_removing_a_queue_changes_exactly_that_queues_files(template_repo, tmp_path):
    project = render(tmp_path / "project", ANSWERS, src=template_repo, vcs_ref=CURRENT)
    commit_all(project, "Generated")
    before, env_file = tree(project), (project / ".env").read_bytes()
    assert answers_file(project)["queues"] == DEFAULT_QUEUES

    queues = f"{DEFAULT_QUEUES},{NEW_QUEUE}:3"
    update(project, data={"queues": queues})
    after = tree(project)
    fresh = render(tmp_path / "fresh", {**ANSWERS, "queues": queues}, src=template_repo, vcs_ref=CURRENT)
    assert tree_diff(after, tree(fresh)) == ""
    assert rejects_and_conflicts(project) == []

    added = sorted(after.keys() - before.keys())
    changed = sorted(path for path in before.keys() & after.keys() if before[path] != after[path])
    assert not before.keys() - after.keys()
    assert all(NEW_QUEUE in path for path in added), added
    assert {"Procfile", "config/settings.py", ".copier-answers.yml"} <= set(changed)
    for path in changed:
        assert hunks_not_about(NEW_QUEUE, before[path], after[path]) == [], path
    new_lines = set(after["Procfile"].decode().splitlines()) - set(before["Procfile"].decode().splitlines())
    assert [line.split(":")[0] for line in new_lines] == [f"worker-{NEW_QUEUE}"]
    assert f'Queue("{NEW_QUEUE}")' in after["config/settings.py"].decode()

    commit_all(project, f"Add the {NEW_QUEUE} queue")
    update(project, data={"queues": DEFAULT_QUEUES})
    assert tree_diff(tree(project), before) == ""
    assert (project / ".env").read_bytes() == env_file


# --- Copies from a relative or a dirty template path (docs/updating.md) --------------------


def set_answer(project: Path, key: str, value: str) -> None:
    path = project / ".copier-answers.yml"
    text, count = re.subn(rf"(?m)^{key}: .*$", f"{key}: {value}", path.read_text())
    assert count == 1
    path.write_text(text)


def test_copy_from_a_relative_path_updates_only_once_src_path_is_absolute(template_repo, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(template_repo.parent)
    project = tmp_path / "project"
    copier.run_copy(template_repo.name, str(project), defaults=True, unsafe=True)
    assert "the template path" in capfd.readouterr().err  # the after-copy warning
    assert answers_file(project)["_src_path"] == template_repo.name
    commit_all(project, "Generated")

    monkeypatch.chdir(project)
    with pytest.raises(UserMessageError, match="only supported in git-tracked templates"):
        update(project)
    # The fix docs/updating.md gives.
    set_answer(project, "_src_path", str(template_repo))
    commit_all(project, "Absolute template path")
    update(project)
    assert answers_file(project)["_commit"] == CURRENT


def test_copy_from_a_dirty_template(template_repo, tmp_path):
    dirty = tmp_path / "dirty"
    git(tmp_path, "clone", "--quiet", str(template_repo), str(dirty))
    with (dirty / "template/README.md.jinja").open("a") as readme:
        readme.write("An uncommitted line.\n")

    # Copier takes the newest tag by default, and the uncommitted change is left out.
    tagged = render(tmp_path / "tagged", {}, src=dirty, vcs_ref=None)
    assert "An uncommitted line." not in (tagged / "README.md").read_text()
    assert answers_file(tagged)["_commit"] == CURRENT

    # At HEAD, Copier includes it, warns, and records a commit that exists nowhere.
    with pytest.warns(DirtyLocalWarning):
        project = render(tmp_path / "head", {}, src=dirty, vcs_ref="HEAD")
    assert "An uncommitted line." in (project / "README.md").read_text()
    recorded = answers_file(project)["_commit"]
    assert recorded.startswith(f"{CURRENT}-1-g")
    assert subprocess.run(["git", "cat-file", "-e", recorded.rpartition("-g")[2]], cwd=dirty).returncode != 0
    commit_all(project, "Generated")
    with pytest.raises(ValueError, match="Unknown revision"):
        update(project)

    # The fix docs/updating.md gives: record the release it was made from; the
    # uncommitted change then counts as the project's own edit.
    set_answer(project, "_commit", CURRENT)
    commit_all(project, "Record the release")
    update(project)
    assert "An uncommitted line." in (project / "README.md").read_text()
    assert rejects_and_conflicts(project) == []


# --- One-off tasks and the after-copy message ---------------------------------------------


def test_tasks_run_on_copy_only_and_never_fail_it_offline(template_repo, tmp_path):
    """`uv lock` failing (no network) still gives a project, a git repository and
    a hint; an update runs no task again. Copier runs as a user runs it."""
    bin_dir, log = tmp_path / "bin", tmp_path / "uv.log"
    bin_dir.mkdir()
    (bin_dir / "uv").write_text(f'#!/bin/sh\necho "$@" >> {log}\necho "error: network unreachable" >&2\nexit 2\n')
    (bin_dir / "uv").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    copier_cli = [sys.executable, "-m", "copier"]

    project = tmp_path / "project"
    out = run([*copier_cli, "copy", "--trust", "--defaults", str(template_repo), str(project)], tmp_path, env)
    assert log.read_text().split() == ["lock", "--quiet"]
    assert "'uv lock' failed (offline?): run it in the project" in out.stdout
    assert "network unreachable" not in out.stdout + out.stderr
    assert git(project, "rev-parse", "--show-toplevel") == str(project)

    # docs/updating.md's command to change an answer.
    commit_all(project, "Generated")
    run(
        [*copier_cli, "update", "--trust", "--defaults", "--data", f"queues={DEFAULT_QUEUES},{NEW_QUEUE}"], project, env
    )
    assert f"worker-{NEW_QUEUE}" in procfile(project)
    assert log.read_text().split() == ["lock", "--quiet"], "an update ran the one-off tasks again"


def test_copy_inside_a_repository_makes_no_nested_one(template_repo, tmp_path):
    monorepo = tmp_path / "monorepo"
    monorepo.mkdir()
    git(monorepo, "init", "--quiet")
    project = render(monorepo / "services" / "app", {}, src=template_repo)
    assert not (project / ".git").exists()
    assert git(project, "rev-parse", "--show-toplevel") == str(monorepo)


def test_message_after_copy_gives_the_next_commands_and_they_are_right(template_repo, tmp_path, venv, capfd):
    project = tmp_path / "project"
    copier.run_copy(str(template_repo), str(project), defaults=True, unsafe=True, data={"database": "sqlite"})
    message = capfd.readouterr().err
    assert "It expects Redis at the addresses and credentials in .env." in message
    block = re.search(r"\nNext:\n((?:  \S.*\n)+)", message)
    assert block, message
    assert block[1].splitlines() == [
        f"  cd {project}",
        "  uv sync",
        "  uv run python manage.py migrate",
        "  uv run honcho start",
    ]
    assert "the template path" not in message  # no relative-path warning for an absolute path
    # uv sync installs honcho (dev group); manage.py migrate and honcho start
    # work in the project (migrate on a scratch SQLite database).
    assert any(
        dep.startswith("honcho")
        for dep in tomllib.loads((project / "pyproject.toml").read_text())["dependency-groups"]["dev"]
    )
    env = project_env(venv, DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3", CELERY_BROKER_URL="memory://")
    run(["python", "manage.py", "migrate", "--no-input"], project, env)
    run(["honcho", "check"], project, env)
