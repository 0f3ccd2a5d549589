"""Answers: every invalid one is rejected with a message naming the field,
and nothing is written; valid edge cases render."""

import re

import pytest

# (answers, field named in the message, a phrase of the rule)
INVALID = {
    "empty project_name": ({"project_name": "  "}, "project_name", "must not be empty"),
    "slug with a hyphen": ({"project_slug": "my-project"}, "project_slug", "lowercase Python identifier"),
    "slug in capitals": ({"project_slug": "MyProject"}, "project_slug", "lowercase Python identifier"),
    "slug starting with a digit": ({"project_slug": "1project"}, "project_slug", "lowercase Python identifier"),
    "slug too long": ({"project_slug": "a" * 33}, "project_slug", "longer than 32"),
    "slug is a keyword": ({"project_slug": "class"}, "project_slug", "Python keyword"),
    "slug is a soft keyword": ({"project_slug": "match"}, "project_slug", "Python keyword"),
    "slug shadows django": ({"project_slug": "django"}, "project_slug", "would shadow"),
    "slug shadows celery": ({"project_slug": "celery"}, "project_slug", "would shadow"),
    "slug shadows config": ({"project_slug": "config"}, "project_slug", "would shadow"),
    "slug shadows tests": ({"project_slug": "tests"}, "project_slug", "would shadow"),
    "slug shadows site": ({"project_slug": "site"}, "project_slug", "would shadow"),
    "slug shadows the stdlib": ({"project_slug": "json"}, "project_slug", "would shadow"),
    "slug shadows the example app": ({"project_slug": "reports"}, "project_slug", "would shadow"),
    "two-line description": ({"description": "one\ntwo"}, "description", "one line"),
    "email without @": ({"author_email": "nobody.example.com"}, "author_email", "not an email"),
    "email without a domain dot": ({"author_email": "me@localhost"}, "author_email", "not an email"),
    "domain with a space": ({"domain_name": "exa mple.com"}, "domain_name", "not a valid"),
    "domain with a leading hyphen": ({"domain_name": "-bad.example.com"}, "domain_name", "not a valid"),
    "domain in capitals": ({"domain_name": "Example.com"}, "domain_name", "not a valid"),
    "unsupported python": ({"python_version": "3.10"}, "python_version", "Invalid choice"),
    "unknown django series": ({"django_version": "6.1"}, "django_version", "Invalid choice"),
    "django 6 on python 3.11": (
        {"python_version": "3.11", "django_version": "6.0"},
        "django_version",
        "Django 6.0 needs Python 3.12 or later",
    ),
    "unknown database": ({"database": "mysql"}, "database", "Invalid choice"),
    "unknown broker": ({"broker": "kafka"}, "broker", "Invalid choice"),
    "unknown result backend": ({"result_backend": "rpc"}, "result_backend", "Invalid choice"),
    "no queues": ({"queues": " "}, "queues", "at least one queue"),
    "empty queue name": ({"queues": "default,,email"}, "queues", "empty queue name"),
    "duplicate queues": ({"queues": "default,email,default"}, "queues", "duplicate queue name 'default'"),
    "queue in capitals": ({"queues": "Default"}, "queues", "not a valid queue name"),
    "queue name too long": ({"queues": "q" * 33}, "queues", "not a valid queue name"),
    "queues clashing as unit names": ({"queues": "bulk_mail,bulk-mail"}, "queues", "clashes"),
    "zero concurrency": ({"queues": "default:0"}, "queues", "from 1 to 256"),
    "concurrency above 256": ({"queues": "default:257"}, "queues", "from 1 to 256"),
    "concurrency not a number": ({"queues": "default:four"}, "queues", "from 1 to 256"),
    "unknown pool": ({"queues": "default:4:gevent"}, "queues", "prefork or threads"),
    "zero prefetch": ({"queues": "default:4:prefork:0"}, "queues", "prefetch of 'default' must be"),
    "prefetch above 1024": ({"queues": "default:4:prefork:1025"}, "queues", "from 1 to 1024"),
    "prefetch not a number": ({"queues": "default:4:prefork:x"}, "queues", "from 1 to 1024"),
    "too many parts": ({"queues": "default:4:prefork:8:x"}, "queues", "too many"),
    "privileged flower port": ({"flower_port": 80}, "flower_port", "outside 1024-65535"),
    "flower port too high": ({"flower_port": 70000}, "flower_port", "outside 1024-65535"),
    "unknown deploy target": ({"deploy": ["docker"]}, "deploy", "Invalid choice"),
    "zero time limit": ({"task_time_limit": 0, "task_soft_time_limit": 0}, "task_time_limit", "at least 1"),
    "soft limit equal to hard": (
        {"task_time_limit": 300, "task_soft_time_limit": 300},
        "task_soft_time_limit",
        "must be below task_time_limit (300)",
    ),
    "soft limit above hard": (
        {"task_time_limit": 60, "task_soft_time_limit": 120},
        "task_soft_time_limit",
        "must be below",
    ),
    "zero soft limit": ({"task_soft_time_limit": 0}, "task_soft_time_limit", "at least 1"),
    "unknown time zone": ({"timezone": "Mars/Olympus_Mons"}, "timezone", "not an IANA time zone"),
    "time zone in the wrong case": ({"timezone": "europe/paris"}, "timezone", "not an IANA time zone"),
}


@pytest.mark.parametrize(("answers", "field", "rule"), INVALID.values(), ids=INVALID.keys())
def test_invalid_answer_is_rejected_and_nothing_is_written(copie, answers, field, rule):
    result = copie.copy(extra_answers=answers)
    assert result.exit_code != 0
    assert result.project_dir is None
    message = str(result.exception)
    assert f"'{field}'" in message or f"{field}:" in message, message
    assert rule in message, message
    written = [p for p in copie.test_dir.rglob("*") if p.is_file()]
    assert not written, written


def test_non_empty_destination_keeps_unrelated_files(tmp_path):
    """Copying into a non-empty directory adds the project beside what is there
    and leaves unrelated files alone (docs/getting-started.md says so)."""
    from helpers import render

    destination = tmp_path / "existing"
    destination.mkdir()
    (destination / "notes.txt").write_text("mine\n")
    render(destination, {})
    assert (destination / "notes.txt").read_text() == "mine\n"
    assert (destination / "manage.py").exists()


def test_conflicting_file_stops_a_non_interactive_copy_and_is_kept(tmp_path):
    """Without a terminal Copier cannot ask about a conflict: it stops (exit 1)
    and leaves the user's file alone; --overwrite replaces it. As documented."""
    import subprocess
    import sys
    from pathlib import Path

    from helpers import ROOT

    copier = str(Path(sys.executable).with_name("copier"))
    destination = tmp_path / "existing"
    destination.mkdir()
    (destination / "manage.py").write_text("mine\n")
    command = [copier, "copy", "--trust", "--defaults", "--quiet", str(ROOT), str(destination)]
    stopped = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    assert stopped.returncode == 1
    assert "Interactive session required" in stopped.stderr + stopped.stdout
    assert (destination / "manage.py").read_text() == "mine\n"
    subprocess.run([*command, "--overwrite"], stdin=subprocess.DEVNULL, capture_output=True, check=True)
    assert "execute_from_command_line" in (destination / "manage.py").read_text()


VALID = {
    "slug derived from an odd name": ({"project_name": "  2nd Shop -- Deluxe!  "}, "nd_shop_deluxe"),
    "spaces around queue items": ({"queues": " default:2 , mail:3:threads "}, None),
    "queue without concurrency": ({"queues": "default,bulk::threads"}, None),
    "prefetch without concurrency or pool": ({"queues": "default:::32,render:2:prefork:1"}, None),
}


@pytest.mark.parametrize(("answers", "slug"), VALID.values(), ids=VALID.keys())
def test_valid_edge_cases_render(copie, answers, slug):
    result = copie.copy(extra_answers=answers)
    assert result.exit_code == 0, result.exception
    if slug:
        assert result.answers["project_slug"] == slug
    procfile = (result.project_dir / "Procfile").read_text()
    for item in answers.get("queues", "").split(","):
        name, _, rest = item.strip().partition(":")
        if not name:
            continue
        line = next(line for line in procfile.splitlines() if line.startswith(f"worker-{name}:"))
        concurrency, pool, prefetch = (rest.split(":") + ["", ""])[:3]
        assert f"-Q {name} -n {name}@%h" in line
        assert (f" -c {concurrency} " in line) == bool(concurrency)
        assert f"-P {pool or 'prefork'}" in line
        assert (f" --prefetch-multiplier {prefetch} " in line) == bool(prefetch)


def test_soft_limit_default_follows_the_hard_limit(copie):
    result = copie.copy(extra_answers={"task_time_limit": 30})
    assert result.exit_code == 0, result.exception
    soft = result.answers["task_soft_time_limit"]
    assert 1 <= soft < 30
    settings = (result.project_dir / "config" / "settings.py").read_text()
    assert re.search(rf"^CELERY_TASK_SOFT_TIME_LIMIT = {soft}$", settings, re.MULTILINE)
