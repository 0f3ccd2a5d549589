"""The systemd units (deploy/systemd/): valid, hardened to an exposure of 2.0
or less each, stopping gracefully, one worker instance and env file per queue.

The boot test (test_deploy_boot_systemd.py) starts their ExecStart= lines."""

import re
import shutil
import subprocess

import pytest
from deploy_host import (
    answers,
    build_root,
    command_line,
    host_paths,
    instances,
    parse_env_file,
    parse_unit,
    queue_env_files,
    slug,
    unit_files,
    value,
    values,
)

from deploy_files import queues_of
from helpers import ROOT
from variants import MATRIX

VARIANTS = {
    "defaults": MATRIX["redis-djangodb-postgresql"],
    "no-beat": MATRIX["redis-none-postgresql"],
    "odd-queues": MATRIX["rabbitmq-redis-postgresql"],
    "sqlite-systemd-only": MATRIX["rabbitmq-none-sqlite"],
    "bare": {
        "project_name": "Fully 100% Bare",
        "database": "sqlite",
        "queues": "default",
        "use_beat": False,
        "use_flower": False,
        "deploy": ["systemd"],
    },
}
WITHOUT_SYSTEMD = ["redis-none-sqlite", "rabbitmq-djangodb-sqlite", "rabbitmq-none-postgresql"]

MAX_EXPOSURE = 2.0
DOCS = ROOT / "docs" / "deploy-systemd.md"


@pytest.fixture(scope="module", params=list(VARIANTS), ids=list(VARIANTS))
def project(request, rendered):
    return rendered(VARIANTS[request.param])


def services(project):
    return {name: parse_unit(text) for name, text in instances(project).items() if name.endswith(".service")}


def seconds(span: str) -> float:
    """A systemd time span ("360", "6min", "1min 30s") in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span):
        total += float(number) * units[unit]
    return total


def test_unit_set_follows_the_answers(project):
    data = answers(project)
    name = slug(project)
    expected = {f"{name}-worker@.service", f"{name}-web.service", f"{name}.target"}
    if data["use_beat"]:
        expected.add(f"{name}-beat.service")
    if data["use_flower"]:
        expected.add(f"{name}-flower.service")
    assert set(unit_files(project)) == expected


def test_one_env_file_per_queue_with_its_options(project):
    queues = {queue["name"]: queue for queue in queues_of(answers(project)["queues"])}
    files = queue_env_files(project)
    assert set(files) == set(queues)
    for name, path in files.items():
        env = parse_env_file(path.read_text())
        assert env["WORKER_POOL"] == queues[name]["pool"]
        assert env["WORKER_CONCURRENCY"] == str(queues[name]["concurrency"] or "")
        assert env["CELERY_WORKER_PREFETCH_MULTIPLIER"] == str(queues[name]["prefetch"] or 1)


def test_process_model_and_restarts(project):
    for name, unit in services(project).items():
        kind = value(unit, "Service", "Type")
        assert kind == ("notify" if "-web" in name else "exec"), name
        assert value(unit, "Service", "PIDFile") is None, name
        # Logs go to the journal: nothing redirects them.
        for key in ("StandardOutput", "StandardError"):
            assert value(unit, "Service", key) in (None, "journal"), name
        assert value(unit, "Service", "Restart") == "always", name
        assert seconds(value(unit, "Service", "RestartSec") or "0") > 0, name
        assert value(unit, "Service", "User") == slug(project), name
        assert value(unit, "Install", "WantedBy") == f"{slug(project)}.target", name
        assert value(unit, "Unit", "PartOf") == f"{slug(project)}.target", name
        command = values(unit, "Service", "ExecStart")
        assert len(command) == 1 and "--detach" not in command[0] and "--pidfile" not in command[0], name


def test_graceful_stop_outlasts_the_hard_time_limit(project):
    limit = answers(project).get("task_time_limit", 300)
    for name, unit in services(project).items():
        assert value(unit, "Service", "KillMode") == "mixed", name
        if "-worker@" in name:
            assert seconds(value(unit, "Service", "TimeoutStopSec")) > limit, name


def test_worker_node_names_are_unique_per_host(project):
    worker = parse_unit(unit_files(project)[f"{slug(project)}-worker@.service"].read_text())
    command = value(worker, "Service", "ExecStart")
    assert re.search(r"\s-Q %i\s", command) and re.search(r"\s-n %i@%H\s", command), command
    for path in unit_files(project).values():
        for section in parse_unit(path.read_text()).values():
            for key, setting in section:
                assert "%h" not in setting, f"{path.name}: {key}={setting}: %h is the home directory"


def test_worker_reads_its_queue_options(project):
    worker = parse_unit(unit_files(project)[f"{slug(project)}-worker@.service"].read_text())
    conf = host_paths(project)["conf"]
    assert values(worker, "Service", "EnvironmentFile") == [f"{conf}/app.env", f"{conf}/queues/%i.env"]
    for queue, path in queue_env_files(project).items():
        argv = command_line(
            value(worker, "Service", "ExecStart").replace("%i", queue), parse_env_file(path.read_text())
        )
        env = parse_env_file(path.read_text())
        assert argv[argv.index("-c") + 1] == env["WORKER_CONCURRENCY"]
        assert argv[argv.index("-P") + 1] == env["WORKER_POOL"]


def test_flower_binds_loopback(project):
    units = unit_files(project)
    name = f"{slug(project)}-flower.service"
    if not answers(project)["use_flower"]:
        assert name not in units
        return
    flower = parse_unit(units[name].read_text())
    assert "--address=127.0.0.1" in value(flower, "Service", "ExecStart").split()
    assert value(flower, "Service", "StateDirectory") == slug(project)


def test_example_env_file(project):
    env = parse_env_file((project / "deploy/systemd/app.env.example").read_text())
    assert env["DJANGO_DEBUG"] == "false"
    assert "change-me" in env["DJANGO_SECRET_KEY"]
    # Every setting it holds is one the project reads (.env.example documents them all),
    # except gunicorn's own WEB_CONCURRENCY.
    documented = set(parse_env_file((project / ".env.example").read_text()))
    documented |= set(re.findall(r"\b([A-Z][A-Z0-9_]+)\b", (project / ".env.example").read_text()))
    assert set(env) - documented <= {"WEB_CONCURRENCY"}
    # Celery reads CELERY_RESULT_BACKEND over the settings: only Redis results may set it.
    assert ("CELERY_RESULT_BACKEND" in env) == (answers(project).get("result_backend") == "redis")
    if answers(project).get("database") == "sqlite":
        assert env["DATABASE_URL"] == f"sqlite:///{host_paths(project)['state']}/db.sqlite3"


def test_systemd_analyze_verify(project, venv, tmp_path):
    """Every unit, worker instances included, in a root where the paths they
    name exist, as install.sh lays them out."""
    root = build_root(project, tmp_path / "root", venv)
    names = list(instances(project))
    proc = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "--man=no", *names],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr + proc.stdout


def exposure(unit_path) -> float:
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout[-2000:] + proc.stderr
    return float(match.group(1))


def test_every_service_scores_at_most_2_0(project, tmp_path):
    """`systemd-analyze security --offline=true`, the worker scored as an instance."""
    scores = {}
    for name, text in instances(project).items():
        if name.endswith(".service"):
            path = tmp_path / name
            path.write_text(text)
            scores[name] = exposure(path)
    print(scores)
    assert scores and all(score <= MAX_EXPOSURE for score in scores.values()), scores


def test_exposure_check_fails_an_unhardened_unit(project, tmp_path):
    """The score parser and threshold catch a unit without its sandbox."""
    name = f"{slug(project)}-web.service"
    text = unit_files(project)[name].read_text()
    unhardened = text.split("# --- Sandbox")[0] + "\n[Install]\nWantedBy=multi-user.target\n"
    path = tmp_path / name
    path.write_text(unhardened)
    assert exposure(path) > MAX_EXPOSURE


def test_every_hardening_option_is_explained_in_the_docs(project):
    """Each sandbox directive has a line in docs/deploy-systemd.md saying what it protects against."""
    docs = DOCS.read_text()
    keys = set()
    for name, text in instances(project).items():
        if name.endswith(".service"):
            sandbox = text.split("# --- Sandbox")[1].split("\n", 1)[1].split("[Install]")[0]
            keys |= {key for key, _ in parse_unit("[Service]\n" + sandbox)["Service"]}
    assert len(keys) >= 25
    # A row of the hardening table: | `Key=` ... | what it protects against |
    missing = [key for key in sorted(keys) if not re.search(rf"^\|[^|\n]*`{key}=[^|\n]*\|[^|\n]*\w", docs, re.M)]
    assert not missing, f"not explained in {DOCS.name}: {missing}"


def test_install_script(project):
    script = project / "deploy/systemd/install.sh"
    assert script.stat().st_mode & 0o111, "install.sh must be executable"
    subprocess.run(["bash", "-n", str(script)], check=True)
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing (apt-get install shellcheck; .ci/apt-packages lists it)"
    proc = subprocess.run([shellcheck, str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
    text = script.read_text()
    # The user is the project's slug; every queue's env file gets a worker instance.
    assert f"SLUG={slug(project)}\n" in text
    assert 'units+=("$SLUG-worker@$queue.service")' in text
    assert re.search(r'for file in "\$HERE"/queues/\*\.env', text)
    assert ("-beat.service" in text) == answers(project)["use_beat"]
    assert ("-flower.service" in text) == answers(project)["use_flower"]


@pytest.mark.parametrize("variant", WITHOUT_SYSTEMD)
def test_no_systemd_or_nginx_without_the_answer(variant, rendered):
    project = rendered(MATRIX[variant])
    assert not (project / "deploy" / "systemd").exists()
    assert not (project / "deploy" / "nginx").exists()
