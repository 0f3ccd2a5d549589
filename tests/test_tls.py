"""TLS to a real Redis verifies the server, by default (ops/tls.py).

A private redis-server serves TLS only, with certificates made here by a CA of
the test's own (trustme). The project is the defaults with Redis results, so
the broker and the result backend both go through TLS:

- with BROKER_TLS_CA_FILE naming that CA, a worker serves the health check and
  the result backend stores and reads;
- a bare rediss:// URL (no CA file) is refused: the system's CAs do not know the
  test's CA. kombu alone would connect without checking anything;
- a wrong CA, an expired certificate and a certificate for another name are
  refused, each with a message that says why, from the health check and from a
  worker at start-up;
- BROKER_TLS_VERIFY=false, or a URL's ssl_cert_reqs=none, connects unverified,
  and `check --deploy` warns (ops.W004).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import tlslab
from enginelab.rabbitmq import private_rabbitmq

from helpers import (
    PrivateRedis,
    flower_queue_lengths,
    free_port,
    project_env,
    run,
    start,
    wait_for_port,
    wait_until,
)

ANSWERS = {"database": "sqlite", "result_backend": "redis", "use_flower": True}


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    return tlslab.certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def project(rendered, tmp_path_factory):
    path = tmp_path_factory.mktemp("tls-project") / "project"
    shutil.copytree(rendered(ANSWERS), path)
    return path


@pytest.fixture
def redis_tls(certificates, tmp_path):
    """A TLS-only redis-server with the certificate of the name asked."""
    servers = []

    def serve(name: str = "good") -> PrivateRedis:
        server = PrivateRedis(tmp_path / f"redis-{name}", appendonly=False, tls=certificates[name]).start()
        servers.append(server)
        return server

    yield serve
    for server in servers:
        server.stop()


def environment(venv, project: Path, server: PrivateRedis, **extra: str) -> dict:
    return project_env(
        venv,
        DATABASE_URL=f"sqlite:///{project}/db.sqlite3",
        CELERY_BROKER_URL=f"{server.url}/0",
        CELERY_RESULT_BACKEND=f"{server.url}/1",
        FLOWER_USER="flower",
        FLOWER_PASSWORD="flower-password",
        **extra,
    )


def healthcheck(project: Path, env: dict, timeout: float = 10):
    return run(
        ["python", "manage.py", "celery_healthcheck", "--queue", "default", "--timeout", str(timeout)],
        project, env, check=False, timeout=180,
    )  # fmt: skip


def serving_worker(project, env, tmp_path):
    """A worker on the default queue, once the health check's task round-trips
    through it; the caller stops it."""
    worker = start(
        "worker", ["celery", "-A", "config", "worker", "-Q", "default", "-P", "solo", "-n", "tls@%h", "-l", "INFO"],
        project, env, tmp_path / "logs",
    )  # fmt: skip
    try:
        worker.wait_for_log(r"ready\.", timeout=90)
        done = healthcheck(project, env, timeout=30)
        assert done.returncode == 0 and "default  ok" in done.stdout, done.stdout + done.stderr
    except BaseException:
        worker.stop()
        raise
    return worker


@pytest.mark.boot
def test_the_ca_file_verifies_the_broker_and_the_result_backend(project, venv, redis_tls, certificates, tmp_path):
    server = redis_tls("good")
    env = environment(venv, project, server, BROKER_TLS_CA_FILE=str(certificates["ca"]))
    run(["python", "manage.py", "migrate", "--noinput", "-v0"], project, env)
    worker = serving_worker(project, env, tmp_path)
    try:
        probe = "from config.celery import app; app.backend.set('tls', 'kept'); print(app.backend.get('tls').decode())"
        stored = run(["python", "manage.py", "shell", "-c", probe], project, env)
        assert stored.stdout.strip().endswith("kept"), stored.stdout
        assert "insecure" not in worker.output(), worker.output()[-3000:]
        # Flower reads the queues' lengths with a Redis client of its own, which
        # takes CELERY_BROKER_USE_SSL (a bare rediss:// URL left it without the CA).
        port = free_port()
        flower_env = dict(env, FLOWER_PORT=str(port), FLOWER_DB=str(tmp_path / "flower.db"))
        flower = start("flower", ["celery", "-A", "config", "flower"], project, flower_env, tmp_path / "logs")
        try:
            wait_for_port(port, timeout=60, proc=flower.proc)
            credentials = f"{env['FLOWER_USER']}:{env['FLOWER_PASSWORD']}"

            def lengths() -> dict:
                return flower_queue_lengths(port, credentials)

            assert wait_until(lambda: "default" in lengths(), timeout=60), (lengths(), flower.output()[-3000:])
            assert "Unable to get queues" not in flower.output(), flower.output()[-3000:]
        finally:
            flower.stop()
    finally:
        worker.stop()
    checked = run(["python", "manage.py", "check", "--deploy", "--fail-level", "WARNING"], project, env, check=False)
    assert "ops.W004" not in checked.stdout + checked.stderr


@pytest.mark.boot
@pytest.mark.parametrize(
    "certificate, ca_file, said",
    [
        ("good", None, "certificate verify failed"),
        ("good", "other-ca", "certificate verify failed"),
        ("expired", "ca", "certificate has expired"),
        ("elsewhere", "ca", "IP address mismatch"),
    ],
    ids=["no CA file: the system's CAs", "a wrong CA", "an expired certificate", "another name"],
)
def test_a_certificate_that_does_not_verify_is_refused_and_said_why(
    project, venv, redis_tls, certificates, tmp_path, certificate, ca_file, said
):
    server = redis_tls(certificate)
    extra = {"BROKER_TLS_CA_FILE": str(certificates[ca_file])} if ca_file else {}
    env = environment(venv, project, server, **extra)
    refused = healthcheck(project, env)
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0, output
    assert "broker unreachable" in output and said in output, output[-3000:]
    # A worker at start-up says the same, and keeps trying (the certificate may be renewed).
    worker = start("worker", ["celery", "-A", "config", "worker", "-Q", "default", "-P", "solo"],
                   project, env, tmp_path / "logs")  # fmt: skip
    try:
        worker.wait_for_log(re.escape(said), timeout=90)
        assert worker.proc.poll() is None
    finally:
        worker.stop()


@pytest.mark.parametrize(
    "extra, query",
    [({"BROKER_TLS_VERIFY": "false"}, ""), ({}, "?ssl_cert_reqs=none")],
    ids=["BROKER_TLS_VERIFY=false", "ssl_cert_reqs=none in the URL"],
)
def test_verification_off_connects_and_check_deploy_warns(project, venv, redis_tls, extra, query):
    server = redis_tls("elsewhere")  # a name no check would accept
    env = environment(venv, project, server, **extra)
    env["CELERY_BROKER_URL"] += query
    probe = "from ops.broker import ensure_broker; ensure_broker(); print('connected')"
    connected = run(["python", "manage.py", "shell", "-c", probe], project, env, check=False)
    assert connected.stdout.strip().endswith("connected"), connected.stdout + connected.stderr
    checked = run(["python", "manage.py", "check", "--deploy"], project, env, check=False)
    warned = [line for line in (checked.stdout + checked.stderr).splitlines() if "ops.W004" in line]
    assert any("CELERY_BROKER_URL" in line for line in warned), checked.stdout + checked.stderr
    assert any("CELERY_RESULT_BACKEND" in line for line in warned) is bool(extra), warned


# --- RabbitMQ: an amqps:// listener ------------------------------------------------------------

RABBITMQ_ANSWERS = {"broker": "rabbitmq", "database": "sqlite", "result_backend": "none", "use_flower": False}


@pytest.mark.boot
def test_amqps_verifies_the_certificate_and_its_name(rendered, venv, certificates, tmp_path):
    """A private RabbitMQ (the stand-in of compose.yaml's image) with a TLS listener:
    py-amqp alone would check the chain but not the name (ops/tls.py)."""
    project = tmp_path / "project"
    shutil.copytree(rendered(RABBITMQ_ANSWERS), project)

    def env_for(url: str, ca_file: str | None) -> dict:
        extra = {"BROKER_TLS_CA_FILE": str(certificates[ca_file])} if ca_file else {}
        return project_env(venv, DATABASE_URL=f"sqlite:///{project}/db.sqlite3", CELERY_BROKER_URL=url, **extra)

    def refused(env: dict, said: str) -> None:
        done = healthcheck(project, env)
        output = done.stdout + done.stderr
        assert done.returncode != 0 and "broker unreachable" in output and said in output, output[-3000:]

    with private_rabbitmq(project, tls=(*certificates["good"], certificates["ca"])) as node:
        refused(env_for(node.tls_url, None), "certificate verify failed")  # the system's CAs
        refused(env_for(node.tls_url, "other-ca"), "certificate verify failed")
        env = env_for(node.tls_url, "ca")
        serving_worker(project, env, tmp_path).stop()
        # A failover list whose first node does not answer: the second node's
        # certificate is checked against the second node's name. (kombu writes
        # the first name into the settings' shared options: ops/amqp.py.)
        unreachable = f"amqps://cdc:unused@127.0.0.2:{free_port()}/"
        serving_worker(project, env_for(f"{unreachable};{node.tls_url}", "ca"), tmp_path).stop()
    with private_rabbitmq(project, tls=(*certificates["elsewhere"], certificates["ca"])) as node:
        refused(env_for(node.tls_url, "ca"), "IP address mismatch")
