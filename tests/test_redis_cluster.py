"""A Redis Cluster is refused at once, with the reason (ops/cluster.py).

A cluster refuses the multi-key commands the broker depends on (CROSSSLOT), so
a worker would fail later on an error that does not name the cause. Against a
real `redis-server --cluster-enabled yes` (one node, enough for INFO to say
cluster_enabled:1), as the broker and as the result backend (whose /1 database
a cluster refuses at connection):

- `check --deploy` fails with ops.E004 naming the setting;
- a worker exits at start, non-zero, with the same message;
- the same commands against a plain private Redis do not mention it.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from helpers import PrivateRedis, project_env, run

ANSWERS = {"database": "sqlite", "result_backend": "redis", "use_flower": False}
REFUSED = "points at a Redis Cluster (cluster_enabled:1)"


@pytest.fixture(scope="module")
def project(rendered, tmp_path_factory):
    path = tmp_path_factory.mktemp("cluster-project") / "project"
    shutil.copytree(rendered(ANSWERS), path)
    return path


@pytest.fixture
def redis_pair(tmp_path):
    """(a cluster-mode node, a plain Redis), both private."""
    cluster = PrivateRedis(tmp_path / "cluster", appendonly=False, cluster=True).start()
    plain = PrivateRedis(tmp_path / "plain", appendonly=False).start()
    yield cluster, plain
    cluster.stop()
    plain.stop()


def environment(venv, project, broker: str, backend: str) -> dict:
    return project_env(
        venv,
        DATABASE_URL=f"sqlite:///{project}/db.sqlite3",
        CELERY_BROKER_URL=broker,
        CELERY_RESULT_BACKEND=backend,
    )


@pytest.mark.parametrize("clustered", ["CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"])
def test_a_redis_cluster_stops_check_deploy_and_the_worker(project, venv, redis_pair, clustered):
    cluster, plain = redis_pair
    urls = {"CELERY_BROKER_URL": f"{plain.url}/0", "CELERY_RESULT_BACKEND": f"{plain.url}/1"}
    urls[clustered] = f"{cluster.url}/{'0' if clustered == 'CELERY_BROKER_URL' else '1'}"
    env = environment(venv, project, urls["CELERY_BROKER_URL"], urls["CELERY_RESULT_BACKEND"])

    checked = run(["python", "manage.py", "check", "--deploy"], project, env, check=False)
    output = checked.stdout + checked.stderr
    assert checked.returncode != 0, output
    (line,) = [line for line in output.splitlines() if "ops.E004" in line]
    assert f"{clustered} {REFUSED}" in line and "RabbitMQ" in line, line

    # The worker stops before it consumes anything, and says why.
    worker = subprocess.run(
        ["celery", "-A", "config", "worker", "-Q", "default", "-P", "solo", "--loglevel", "INFO"],
        cwd=project, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = worker.stdout + worker.stderr
    assert worker.returncode != 0, output[-3000:]
    assert f"{clustered} {REFUSED}" in output, output[-3000:]
    assert "ready." not in output, output[-3000:]


def test_a_plain_redis_passes(project, venv, redis_pair):
    _, plain = redis_pair
    env = environment(venv, project, f"{plain.url}/0", f"{plain.url}/1")
    checked = run(["python", "manage.py", "check", "--deploy"], project, env, check=False)
    assert "ops.E004" not in checked.stdout + checked.stderr, checked.stdout + checked.stderr
    # The same command line as above serves (the health check round-trips a task).
    worker = subprocess.Popen(
        ["celery", "-A", "config", "worker", "-Q", "default", "-P", "solo", "--loglevel", "INFO"],
        cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        pinged = run(
            ["python", "manage.py", "celery_healthcheck", "--queue", "default", "--timeout", "60"],
            project, env, check=False, timeout=120,
        )  # fmt: skip
        assert pinged.returncode == 0, pinged.stdout + pinged.stderr
    finally:
        worker.terminate()
        worker.wait(60)
