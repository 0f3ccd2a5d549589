"""Build the generated Dockerfile and boot compose.yaml in a real Docker Engine.

For each of ENGINE_VARIANTS, from the rendered directory with its generated
`.env` and no edits, exactly as docs/deploy-compose.md says:

    uv lock
    docker compose build
    docker compose up -d --wait

Every image the files name (python, uv, redis, postgres, rabbitmq) is a local
stand-in built from Debian trixie (enginelab/images.py), since no registry can
be reached here. The three stacks run one after another on one xdist worker:
compose.yaml publishes fixed host ports and gives beat a fixed container name.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from enginelab import images
from enginelab.compose import Compose
from enginelab.docs import doc_block
from enginelab.engine import docker, require_engine
from obslab.exposition import sample

import deploy_files
from helpers import http, wait_until
from variants import ENGINE_VARIANTS

UV = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
APP_SERVICES = ("migrate", "web", "beat", "flower")  # and worker-*
SCHEDULE_NAME = "Purge dead letters older than 30 days"
# A file in the project's virtualenv that must not reach the build context.
VENV_MARKER = ".venv/not-in-the-image"

pytestmark = [pytest.mark.boot, pytest.mark.xdist_group("engine-compose")]


def is_app(service: str) -> bool:
    return service in APP_SERVICES or service.startswith("worker-")


def documented(stack, block_id: str, timeout: float = 900, replace: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command block of docs/deploy-compose.md as a user would: in the project,
    or from the directory above it for the block that starts with `cd my_project`.
    COMPOSE_PROJECT_NAME gives the stack this test's name."""
    commands = doc_block("deploy-compose.md", block_id)
    for text, replacement in (replace or {}).items():
        commands = commands.replace(text, replacement)
    cwd = stack.project.parent if commands.startswith(f"cd {stack.project.name}\n") else stack.project
    env = {**os.environ, "COMPOSE_PROJECT_NAME": stack.name, "PATH": f"{Path(UV).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", commands],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert proc.returncode == 0, (
        f"docs/deploy-compose.md#{block_id} exited {proc.returncode}:\n{commands}\n"
        f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}\n{stack.describe()}"
    )
    return proc


@pytest.fixture(scope="module", params=list(ENGINE_VARIANTS))
def stack(request, rendered, tmp_path_factory):
    require_engine()
    name = request.param
    answers = ENGINE_VARIANTS[name]
    # The docs' commands start with `cd my_project`.
    project = tmp_path_factory.mktemp(f"engine-{name}") / "my_project"
    shutil.copytree(rendered(answers), project, symlinks=True)
    (project / "uv.lock").unlink(missing_ok=True)  # the docs' `uv lock` makes it
    (project / VENV_MARKER).parent.mkdir(exist_ok=True)
    (project / VENV_MARKER).write_text("a developer's local virtualenv\n")
    images.standins_for(project)
    compose = Compose(project, f"cdc-{name}-{uuid.uuid4().hex[:6]}")
    compose.answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    compose.dotenv = deploy_files.read_env_file(project / ".env")
    try:
        # uv lock; docker compose up -d --build --wait; docker compose ps -a
        compose.install = documented(compose, "install", timeout=1800)
        yield compose
    finally:
        compose.down()


def test_every_service_reaches_healthy(stack):
    services = stack.services()
    unhealthy = {s: stack.health(s) for s in services if s != "migrate" and stack.health(s) != "healthy"}
    assert not unhealthy, f"{unhealthy}\n{stack.describe()}"
    expected = {"web", *(f"worker-{q['name']}" for q in parsed_queues(stack))}
    assert expected <= set(services)


def parsed_queues(stack) -> list[dict]:
    return deploy_files.queues_of(stack.answers["queues"])


def test_migrate_ran_once_and_exited_0(stack):
    containers = stack.containers("migrate")
    assert len(containers) == 1
    state = stack.inspect(containers[0])
    assert state["State"]["Status"] == "exited"
    assert state["State"]["ExitCode"] == 0
    assert state["RestartCount"] == 0
    log = stack.logs("migrate")
    assert log.count("Applying ops.0001_initial... OK") == 1, log[-2000:]


def test_only_web_and_flower_are_published_on_loopback(stack):
    published = set()
    for container in stack.run("ps", "-q").stdout.split():
        info = stack.inspect(container)
        service = info["Config"]["Labels"]["com.docker.compose.service"]
        for port, bindings in (info["HostConfig"]["PortBindings"] or {}).items():
            for binding in bindings or []:
                published.add((service, binding["HostIp"], binding["HostPort"], port))
    expected = {("web", "127.0.0.1", "8000", "8000/tcp")}
    if stack.answers["use_flower"]:
        port = str(stack.answers["flower_port"])
        expected.add(("flower", "127.0.0.1", port, f"{port}/tcp"))
    assert published == expected


# Run in the web container: what a Prometheus attached to the project network
# would read, from every address each dns_sd_configs name resolves to.
SCRAPE = """
import json, socket, sys, urllib.request
scraped = {}
for name, port in json.loads(sys.argv[1]):
    for address in sorted({info[4][0] for info in socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)}):
        with urllib.request.urlopen(f"http://{address}:{port}/metrics", timeout=10) as response:
            scraped.setdefault(name, {})[address] = response.read().decode()
print(json.dumps(scraped))
"""


def test_prometheus_snippet_reaches_every_app_container_on_the_project_network(stack):
    """deploy/prometheus/compose.yml's targets answer inside the project network
    (and test_only_web_and_flower_are_published_on_loopback keeps them off the
    host): web with each queue's depth, each worker consuming its queue, beat."""
    config = yaml.safe_load((stack.project / "deploy/prometheus/compose.yml").read_text())
    targets = [
        (name, sd["port"]) for job in config["scrape_configs"] for sd in job["dns_sd_configs"] for name in sd["names"]
    ]
    queues = [q["name"] for q in parsed_queues(stack)]
    expected = {"web", *(f"worker-{queue}" for queue in queues), *(["beat"] if stack.answers["use_beat"] else [])}
    assert {name for name, _ in targets} == expected
    scraped = json.loads(stack.exec("web", "python", "-c", SCRAPE, json.dumps(targets)).stdout)
    assert set(scraped) == expected
    for name, by_address in scraped.items():  # every running replica
        assert len(by_address) == len(stack.run("ps", "-q", name).stdout.split()), (name, by_address.keys())
    (web,) = scraped["web"].values()
    assert sample(web, "celery_broker_up") == 1.0, web[-2000:]
    for queue in queues:
        assert sample(web, "celery_queue_length", queue=queue) is not None, web[-2000:]
        for text in scraped[f"worker-{queue}"].values():
            assert sample(text, "celery_worker_consuming", queue=queue) == 1.0, text[-2000:]


def test_web_answers_on_its_published_port(stack):
    status, body = http("http://127.0.0.1:8000/healthz/", host=stack.answers["domain_name"])
    assert status == 200, body
    assert json.loads(body) == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}
    # DJANGO_ALLOWED_HOSTS is the domain only: another Host is refused.
    assert http("http://127.0.0.1:8000/healthz/", host="attacker.example")[0] == 400


def healthcheck_nodes(output: str) -> dict[str, set[str]]:
    """Queue -> the node names that answered, from celery_healthcheck's lines; all must be ok."""
    served: dict[str, set[str]] = {}
    for line in output.splitlines():
        queue, state, node, *_ = line.split()
        assert state == "ok", line
        served.setdefault(queue, set()).add(node)
    return served


def test_celery_healthcheck_in_the_web_container_round_trips_every_queue(stack):
    served = healthcheck_nodes(documented(stack, "healthcheck").stdout)
    queues = [q["name"] for q in parsed_queues(stack)]
    assert list(served) == queues
    # Each queue answered from its own worker: <queue>@<that worker's container id>.
    for queue, nodes in served.items():
        (node,) = nodes
        name, _, host = node.partition("@")
        assert name == queue
        assert stack.inspect(stack.container(f"worker-{queue}"))["Config"]["Hostname"] == host


def test_remote_control_and_events_reach_every_worker(stack):
    """celery inspect ping and control enable_events (the transient control and
    event queues that RabbitMQ 4.3 refuses unless exclusive), then Flower's
    workers API, which reads the events."""
    workers = {
        stack.inspect(stack.container(f"worker-{q['name']}"))["Config"]["Hostname"]: q["name"]
        for q in parsed_queues(stack)
    }
    expected = {f"{queue}@{host}" for host, queue in workers.items()}

    def answered(output: str) -> set[str]:
        """The nodes that said OK, the workers' (beat, celerybeat@, answers too)."""
        nodes = set(re.findall(r"^->\s+(\S+): OK", output, re.M))
        return {node for node in nodes if not node.startswith("celerybeat@")}

    ping = stack.exec("web", "celery", "-A", "config", "inspect", "ping", "--timeout", "10").stdout
    assert answered(ping) == expected, ping
    events = stack.exec("web", "celery", "-A", "config", "control", "enable_events", "--timeout", "10").stdout
    try:
        assert answered(events) == expected, events
        if not stack.answers["use_flower"]:
            return
        url = f"http://127.0.0.1:{stack.answers['flower_port']}/flower/api/workers?refresh=1"
        credentials = f"{stack.dotenv['FLOWER_USER']}:{stack.dotenv['FLOWER_PASSWORD']}"

        def listed():
            status, body = http(url, auth=credentials)
            return status == 200 and expected <= set(json.loads(body))

        assert wait_until(listed, timeout=60), http(url, auth=credentials)
    finally:
        stack.exec("web", "celery", "-A", "config", "control", "disable_events", "--timeout", "10", check=False)


def test_flower_asks_for_credentials(stack):
    if not stack.answers["use_flower"]:
        assert "flower" not in stack.services()
        return
    url = f"http://127.0.0.1:{stack.answers['flower_port']}/flower/"
    assert http(url)[0] == 401
    assert http(url, auth="admin:wrong")[0] == 401
    credentials = f"{stack.dotenv['FLOWER_USER']}:{stack.dotenv['FLOWER_PASSWORD']}"
    assert http(url, auth=credentials)[0] == 200


def test_beat_fires_a_schedule(stack):
    if not stack.answers["use_beat"]:
        assert "beat" not in stack.services()
        return
    # Every second instead of daily, as an operator could set it in the admin.
    stack.manage(
        "shell",
        "-c",
        "from django_celery_beat.models import IntervalSchedule, PeriodicTask\n"
        "every, _ = IntervalSchedule.objects.get_or_create(every=1, period='seconds')\n"
        f"task = PeriodicTask.objects.get(name={SCHEDULE_NAME!r})\n"
        "task.crontab, task.interval = None, every\n"
        "task.save()\n",
    )
    first_queue = parsed_queues(stack)[0]["name"]
    stack.wait_for_log(f"worker-{first_queue}", r"ops\.tasks\.purge_dead_letters\[[\w-]+\] succeeded", timeout=90)
    assert "Sending due task" in stack.logs("beat")


def test_app_containers_run_as_a_non_root_user(stack):
    checked = []
    for container in stack.run("ps", "-q").stdout.split():
        info = stack.inspect(container)
        service = info["Config"]["Labels"]["com.docker.compose.service"]
        if not is_app(service):
            continue
        assert info["Config"]["User"] == "10001:10001", service
        # The real and effective uids of every process in the container.
        top = docker("top", container, "-eo", "pid,uid,euid,comm").stdout.splitlines()[1:]
        uids = {(fields[1], fields[2]) for fields in (row.split() for row in top)}
        assert uids == {("10001", "10001")}, f"{service}: {top}"
        checked.append(service)
    assert "web" in checked and any(s.startswith("worker-") for s in checked)


def test_the_app_cannot_write_its_code_or_root_fs(stack):
    proc = stack.exec("web", "sh", "-c", "touch /app/manage.py || touch /app/x || touch /etc/x", check=False)
    assert proc.returncode != 0
    assert "Read-only file system" in proc.stderr or "Permission denied" in proc.stderr, proc.stderr


def test_no_secret_in_any_image_layer_or_file(stack):
    secrets = {key: value for key, value in stack.dotenv.items() if key.endswith(("_PASSWORD", "SECRET_KEY")) and value}
    assert secrets
    image = stack.config()["services"]["web"]["image"]
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    inspect = docker("image", "inspect", image).stdout
    leaked = [key for key, value in secrets.items() if value in history or value in inspect]
    assert not leaked, f"in the image's history or config: {leaked}"
    # Every file of the image, as root, for every generated secret.
    patterns = " ".join(f"-e {shlex.quote(value)}" for value in secrets.values())
    scan = f"grep -rlF {patterns} / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev 2>/dev/null; true"
    found = docker("run", "--rm", "--user", "0", "--entrypoint", "sh", image, "-c", scan, timeout=600).stdout.split()
    assert not found, f"generated secrets found in image files: {found}"


def test_dockerignore_keeps_env_git_and_venv_out(stack):
    image = stack.config()["services"]["web"]["image"]
    probe = "for p in /app/.env /app/.git /app/" + VENV_MARKER + "; do test -e $p && echo $p; done; true"
    present = docker("run", "--rm", "--entrypoint", "sh", image, "-c", probe).stdout.split()
    assert not present, f"in the image: {present}"
    assert (stack.project / ".env").exists() and (stack.project / ".git").exists()
    assert (stack.project / VENV_MARKER).exists()


def test_a_one_line_python_change_reuses_the_dependency_layer(stack):
    """Layer order: uv.lock and pyproject.toml are installed before `COPY . .`."""
    views = stack.project / "reports" / "views.py"
    # Content no earlier build had: BuildKit's cache is keyed by content, and
    # repeated runs on one engine would otherwise find this very change cached.
    views.write_text(views.read_text() + f"# a one-line change {uuid.uuid4().hex}\n")
    build = stack.run("--progress", "plain", "build", "web", timeout=900)
    output = build.stdout + build.stderr
    steps = dict(re.findall(r"^#(\d+) \[(?:web )?(?:build|stage-1) \d+/\d+\] (.*)$", output, re.M)[::-1])

    def step(text: str) -> str:
        found = [number for number, line in steps.items() if text in line]
        assert len(found) == 1, f"{len(found)} steps with {text!r}:\n{output[-3000:]}"
        return found[0]

    def cached(number: str) -> bool:
        return bool(re.search(rf"^#{number} CACHED$", output, re.M))

    assert cached(step("uv sync")), f"uv sync ran again:\n{output[-3000:]}"
    # The runtime stage's virtualenv layer too: only the code's layers are new.
    assert cached(step("COPY --from=build /opt/venv")), f"the virtualenv layer was rebuilt:\n{output[-3000:]}"
    assert not cached(step("COPY . .")), "the changed code was not copied"


def test_redis_requires_its_password_and_keeps_aof_and_noeviction(stack):
    if "redis" not in stack.services():
        assert stack.answers["broker"] != "redis" and stack.answers["result_backend"] != "redis"
        return
    for name, value in (("appendonly", "yes"), ("maxmemory-policy", "noeviction")):
        assert stack.exec("redis", "redis-cli", "config", "get", name).stdout.split() == [name, value]
    # The image's environment has REDISCLI_AUTH; without it redis-cli still exits 0.
    bare = stack.exec("redis", "env", "-u", "REDISCLI_AUTH", "redis-cli", "ping", check=False)
    assert bare.returncode == 0 and "NOAUTH" in bare.stdout, bare.stdout + bare.stderr


def test_redis_healthcheck_fails_without_the_password(stack):
    if "redis" not in stack.services():
        assert stack.answers["broker"] != "redis" and stack.answers["result_backend"] != "redis"
        return
    test = stack.config()["services"]["redis"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    assert stack.exec("redis", "sh", "-c", test[1], check=False).returncode == 0
    for auth in ("", "wrong"):
        proc = stack.exec("redis", "env", f"REDISCLI_AUTH={auth}", "sh", "-c", test[1], check=False)
        assert proc.returncode != 0, f"the healthcheck passes with REDISCLI_AUTH={auth!r}"


def test_scaling_a_queue_as_documented(stack):
    """The docs scale worker-email; a variant without that queue scales its last queue."""
    queue = "email" if any(q["name"] == "email" for q in parsed_queues(stack)) else parsed_queues(stack)[-1]["name"]
    documented(stack, "scale", timeout=600, replace={"worker-email": f"worker-{queue}"})
    containers = stack.containers(f"worker-{queue}")
    assert len(containers) == 3
    stack.wait_for(
        lambda: all(stack.inspect(c)["State"].get("Health", {}).get("Status") == "healthy" for c in containers),
        timeout=120, what=f"3 healthy worker-{queue} containers",
    )  # fmt: skip
    hosts = {stack.inspect(c)["Config"]["Hostname"] for c in containers}
    out = stack.manage("shell", "-c", PING_NODES).stdout
    answered = {line.partition("@")[2] for line in out.split() if line.startswith(f"{queue}@")}
    assert answered == hosts, f"{queue}: {answered} != {hosts}"
    stack.run("up", "-d", "--scale", f"worker-{queue}=1", "--no-recreate", "--wait", timeout=600)


# Every node that answers a broadcast ping, one per line.
PING_NODES = "from config.celery import app\nfor reply in app.control.ping(timeout=5):\n    print(*reply)\n"


def test_restarting_the_app_services_one_after_another(stack):
    before = {c: stack.inspect(c)["State"]["StartedAt"] for c in stack.run("ps", "-q").stdout.split()}
    documented(stack, "restart", timeout=1200)
    for container, started in before.items():
        info = stack.inspect(container)
        service = info["Config"]["Labels"]["com.docker.compose.service"]
        if is_app(service):
            assert info["State"]["StartedAt"] != started, f"{service} was not restarted"
    up = stack.run("up", "--detach", "--wait", "--wait-timeout", "300", timeout=600, check=False)
    assert up.returncode == 0, stack.describe()
    served = healthcheck_nodes(documented(stack, "healthcheck").stdout)
    assert list(served) == [q["name"] for q in parsed_queues(stack)]


def test_every_app_service_stops_cleanly_on_compose_stop(stack):
    """Last: `docker compose stop` sends SIGTERM to each PID 1 and waits its grace period."""
    stopping = time.strftime("%H:%M:%S", time.gmtime())
    stack.run("stop", timeout=600)
    codes, states = {}, {}
    for container in stack.run("ps", "-a", "-q").stdout.split():
        info = stack.inspect(container)
        service = info["Config"]["Labels"]["com.docker.compose.service"]
        if is_app(service) and service != "migrate":
            codes[service] = info["State"]["ExitCode"]
            states[service] = {key: info["State"][key] for key in ("StartedAt", "FinishedAt")}
            states[service]["RestartCount"] = info["RestartCount"]
    # A service that did not stop in time: its state and log, to say where it hung.
    hung = [
        f"--- {service} {states[service]}\n"
        + stack.run("logs", "--timestamps", "--no-color", service, check=False).stdout[-4000:]
        for service, code in codes.items()
        if code != 0
    ]
    assert codes and not hung, f"{codes}; stop began at {stopping} UTC\n" + "\n".join(hung)
    for service in codes:
        if service.startswith("worker-"):
            assert "Warm shutdown" in stack.logs(service) or "warm shutdown" in stack.logs(service), service
