"""The stand-in images (tests/enginelab/standins/) do what compose.yaml and the
generated Dockerfile rely on the official images to do.

Each test builds one stand-in with `enginelab.images.standin` (cached after the
first build) and checks its documented behaviour with real containers on a
private network, removed afterwards. The references are read from the template,
so a bumped tag is tested as soon as the template names it.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import pytest
from enginelab import images
from enginelab.engine import docker, require_engine

from helpers import QUESTIONS

pytestmark = [pytest.mark.boot, pytest.mark.xdist_group("engine-standins")]

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = (ROOT / "template" / "compose.yaml.jinja").read_text()
DOCKERFILE = (ROOT / "template" / "Dockerfile.jinja").read_text()
PYTHON_VERSIONS = QUESTIONS["python_version"]["choices"]


def named(pattern: str, text: str) -> str:
    match = re.search(pattern, text, re.M)
    assert match, f"the template names no image matching {pattern!r}"
    return match.group(1)


REDIS = named(r"^\s*image: (redis:\S+)$", COMPOSE)
POSTGRES = named(r"^\s*image: (postgres:\S+)$", COMPOSE)
RABBITMQ = named(r"^\s*image: (rabbitmq:\S+)$", COMPOSE)
UV = named(r"COPY --from=(ghcr\.io/astral-sh/uv:\S+) ", DOCKERFILE)
PYTHON_TAG = named(r"^FROM python:\$\{PYTHON_VERSION\}(\S+) AS build$", DOCKERFILE)  # "-slim-trixie"


class Lab:
    """Containers and a network with unique names; `close` removes them all."""

    def __init__(self) -> None:
        self.prefix = f"cdc-standin-{uuid.uuid4().hex[:10]}"
        self.network = f"{self.prefix}-net"
        self.containers: list[str] = []
        self.images: list[str] = []
        docker("network", "create", self.network)

    def start(
        self, name: str, image: str, *args: str, env: dict[str, str] | None = None, options: tuple[str, ...] = ()
    ) -> str:
        container = f"{self.prefix}-{name}"
        self.containers.append(container)
        env_args = [arg for key, value in (env or {}).items() for arg in ("--env", f"{key}={value}")]
        docker("run", "--detach", "--name", container, "--network", self.network, *env_args, *options, image, *args)
        return container

    def client(self, image: str, *args: str, env: dict[str, str] | None = None, options: tuple[str, ...] = ()):
        """A one-shot container on the lab's network; its CompletedProcess."""
        container = f"{self.prefix}-client-{uuid.uuid4().hex[:6]}"
        self.containers.append(container)
        env_args = [arg for key, value in (env or {}).items() for arg in ("--env", f"{key}={value}")]
        argv = ("run", "--rm", "--name", container, "--network", self.network, *env_args, *options, image, *args)
        return docker(*argv, check=False, timeout=120)

    def close(self) -> None:
        for container in self.containers:
            docker("rm", "--force", "--volumes", container, check=False)
        docker("network", "rm", self.network, check=False)
        for image in self.images:
            docker("rmi", "--force", image, check=False)


@pytest.fixture
def lab():
    require_engine()
    lab = Lab()
    try:
        yield lab
    finally:
        lab.close()


def wait_for(check, what: str, timeout: float = 120, interval: float = 1):
    """Call `check` until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(interval)


def logs(container: str) -> str:
    proc = docker("logs", container, check=False)
    return proc.stdout + proc.stderr


def exec_(container: str, *argv: str, check: bool = False):
    return docker("exec", container, *argv, check=check, timeout=60)


def config(image: str) -> dict:
    return json.loads(docker("image", "inspect", "--format", "{{json .Config}}", image).stdout)


def pid1_uid(container: str) -> int:
    status = exec_(container, "cat", "/proc/1/status", check=True).stdout
    return int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))


# --- postgres ---------------------------------------------------------------------------


def test_postgres(lab):
    image = images.standin(POSTGRES)
    assert config(image)["StopSignal"] == "SIGINT"
    assert "PGDATA=/var/lib/postgresql/data" in config(image)["Env"]

    # Without a password the official entrypoint refuses to initialise.
    refused = lab.client(image)
    assert refused.returncode != 0
    assert "superuser password is not specified" in refused.stderr

    env = {"POSTGRES_USER": "app", "POSTGRES_PASSWORD": "s3cret-pw", "POSTGRES_DB": "appdb"}
    server = lab.start("postgres", image, env=env)
    # compose.yaml's healthcheck, verbatim.
    healthcheck = ("pg_isready", "-h", "127.0.0.1", "-p", "5432", "-U", "app", "-d", "appdb")
    wait_for(lambda: exec_(server, *healthcheck).returncode == 0, "pg_isready over TCP")

    # First-time init: a temporary server on the Unix socket only, then the real one on TCP.
    before, marker, after = logs(server).partition("PostgreSQL init process complete")
    assert marker, logs(server)
    assert 'listening on Unix socket "/var/run/postgresql/.s.PGSQL.5432"' in before
    assert "listening on IPv4" not in before
    assert 'listening on IPv4 address "0.0.0.0", port 5432' in after

    # The server runs as the non-root postgres user, on a 0700 data directory it owns.
    assert pid1_uid(server) == 70
    assert exec_(server, "stat", "-c", "%U %a", "/var/lib/postgresql/data").stdout.split() == ["postgres", "700"]

    # From another container, over TCP: the password is required, and checked with SCRAM.
    def psql(password: str, query: str):
        argv = ("psql", "-h", server, "-U", "app", "-d", "appdb", "-tAc", query)
        return lab.client(image, *argv, env={"PGPASSWORD": password})

    ok = psql("s3cret-pw", "select current_user, current_database(), current_setting('password_encryption')")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "app|appdb|scram-sha-256"
    wrong = psql("not-the-password", "select 1")
    assert wrong.returncode != 0
    assert 'password authentication failed for user "app"' in wrong.stderr
    hba = exec_(server, "cat", "/var/lib/postgresql/data/pg_hba.conf", check=True).stdout
    assert hba.rstrip().endswith("host all all all scram-sha-256")

    # SIGINT is a fast shutdown; a restart finds the database and skips initialisation.
    docker("stop", server, timeout=60)
    assert "received fast shutdown request" in logs(server)
    docker("start", server)
    wait_for(lambda: exec_(server, *healthcheck).returncode == 0, "pg_isready after a restart")
    assert "Skipping initialization" in logs(server)
    again = psql("s3cret-pw", "select 1")
    assert again.stdout.strip() == "1", again.stderr


# --- redis ------------------------------------------------------------------------------


def test_redis(lab):
    image = images.standin(REDIS)
    assert config(image)["WorkingDir"] == "/data"
    version = docker("run", "--rm", image, "redis-server", "--version").stdout
    assert version.startswith("Redis server v="), version

    # compose.yaml's command line and environment.
    command = ("redis-server", "--requirepass", "s3cret-pw", "--appendonly", "yes", "--maxmemory-policy", "noeviction")
    server = lab.start("redis", image, *command, env={"REDISCLI_AUTH": "s3cret-pw"})
    healthcheck = ("sh", "-c", "redis-cli -h 127.0.0.1 -p 6379 ping | grep -qx PONG")
    wait_for(lambda: exec_(server, *healthcheck).returncode == 0, "compose.yaml's redis healthcheck")
    assert pid1_uid(server) == 999  # the entrypoint dropped root for redis-server

    def cli(*args: str, password: str | None = None) -> str:
        env = {"REDISCLI_AUTH": password} if password else None
        proc = lab.client(image, "redis-cli", "-h", server, *args, env=env)
        return (proc.stderr + proc.stdout).strip()  # redis-cli reports a failed AUTH on stderr

    assert cli("ping").startswith("NOAUTH")
    assert "WRONGPASS" in cli("ping", password="not-the-password")
    assert cli("ping", password="s3cret-pw") == "PONG"
    settings = {"appendonly": "yes", "maxmemory-policy": "noeviction", "dir": "/data", "protected-mode": "no"}
    for name, value in settings.items():
        assert cli("config", "get", name, password="s3cret-pw").split() == [name, value]
    assert cli("set", "k", "v", password="s3cret-pw") == "OK"
    assert exec_(server, "test", "-d", "/data/appendonlydir").returncode == 0

    # As in the official image, protected mode is off: without a password (the
    # image's default command) other containers can still connect.
    open_server = lab.start("redis-open", image)
    wait_for(lambda: exec_(open_server, "redis-cli", "ping").stdout.strip() == "PONG", "redis without a password")
    assert lab.client(image, "redis-cli", "-h", open_server, "ping").stdout.strip() == "PONG"


# --- rabbitmq ---------------------------------------------------------------------------

# A client for the AMQP 0-9-1 handshake (the standard library only): PLAIN login,
# then Connection.Open of a vhost. Prints "open-ok", "refused" or "closed <code>".
AMQP_PROBE = r"""
import socket, struct, sys
host, user, password, vhost = sys.argv[1:5]
sock = socket.create_connection((host, 5672), timeout=15)

def recv(n):
    data = b""
    while len(data) < n:
        try:
            chunk = sock.recv(n - len(data))
        except ConnectionResetError:  # how RabbitMQ ends a failed login
            chunk = b""
        if not chunk:
            return None
        data += chunk
    return data

def read():
    head = recv(7)
    if head is None:
        return None, b""
    _, _, size = struct.unpack(">BHI", head)
    body = recv(size + 1)
    return (struct.unpack(">HH", body[:4]), body[4:-1]) if body else (None, b"")

def send(cls, method, args):
    payload = struct.pack(">HH", cls, method) + args
    sock.sendall(struct.pack(">BHI", 1, 0, len(payload)) + payload + b"\xce")

def short(text):
    return bytes([len(text.encode())]) + text.encode()

sock.sendall(b"AMQP\x00\x00\x09\x01")
assert read()[0] == (10, 10), "no Connection.Start"
response = f"\0{user}\0{password}".encode()
send(10, 11, struct.pack(">I", 0) + short("PLAIN") + struct.pack(">I", len(response)) + response + short("en_US"))
method, args = read()
if method != (10, 30):
    print("refused")
    sys.exit()
send(10, 31, args[:8])
send(10, 40, short(vhost) + short("") + b"\x00")
method, args = read()
print("open-ok" if method == (10, 41) else f"closed {struct.unpack('>H', args[:2])[0] if args else None}")
"""


def test_rabbitmq(lab):
    image = images.standin(RABBITMQ)
    python = images.standin(f"python:{PYTHON_VERSIONS[-1]}{PYTHON_TAG}")
    env = {"RABBITMQ_DEFAULT_USER": "app", "RABBITMQ_DEFAULT_PASS": "s3cret-pw", "RABBITMQ_DEFAULT_VHOST": "appvh"}
    # compose.yaml sets `hostname: rabbitmq`.
    server = lab.start("rabbitmq", image, env=env, options=("--hostname", "rabbitmq"))
    wait_for(lambda: "Server startup complete" in logs(server), "RabbitMQ startup", timeout=180)
    # compose.yaml's healthcheck, run as the image's default user (root) as compose does.
    health = exec_(server, "rabbitmq-diagnostics", "-q", "check_port_connectivity")
    assert health.returncode == 0, health.stdout + health.stderr
    assert exec_(server, "id", "-u").stdout.strip() == "0"

    # The RabbitMQ version the tag names (Debian sid's 4.3 for 4.3).
    version = exec_(server, "rabbitmqctl", "-q", "version", check=True).stdout.strip()
    assert version.startswith(images.tag_version(RABBITMQ.rpartition(":")[2]) + "."), version

    # The node is named after the hostname, keeps its data in /var/lib/rabbitmq, runs as rabbitmq.
    node = exec_(server, "rabbitmqctl", "-q", "eval", "node().", check=True).stdout.strip()
    assert node == "rabbit@rabbitmq"
    assert exec_(server, "test", "-d", "/var/lib/rabbitmq/mnesia/rabbit@rabbitmq").returncode == 0
    assert pid1_uid(server) == 100

    # RABBITMQ_DEFAULT_*: that administrator, that vhost, all permissions there; no guest.
    users = exec_(server, "rabbitmqctl", "-q", "list_users", check=True).stdout
    assert re.search(r"^app\s+\[administrator\]$", users, re.M), users
    assert "guest" not in users
    vhosts = exec_(server, "rabbitmqctl", "-q", "list_vhosts", check=True).stdout.split()
    assert "appvh" in vhosts and "/" not in vhosts, vhosts
    permissions = exec_(server, "rabbitmqctl", "-q", "list_permissions", "-p", "appvh", check=True).stdout
    assert re.search(r"^app\s+\.\*\s+\.\*\s+\.\*$", permissions, re.M), permissions

    # Over AMQP from another container: the password and the vhost are checked.
    def amqp(user: str, password: str, vhost: str) -> str:
        proc = lab.client(python, "python3", "-c", AMQP_PROBE, server, user, password, vhost)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    assert amqp("app", "s3cret-pw", "appvh") == "open-ok"
    assert amqp("app", "not-the-password", "appvh") == "refused"
    assert amqp("app", "s3cret-pw", "/") == "closed 530"  # NOT_ALLOWED: no such vhost


# --- python and uv ----------------------------------------------------------------------


@pytest.mark.parametrize("version", PYTHON_VERSIONS)
def test_python(lab, version):
    image = images.standin(f"python:{version}{PYTHON_TAG}")
    settings = config(image)
    assert settings["Cmd"] == ["python3"]
    assert "PATH=/usr/local/bin:" in " ".join(settings["Env"])

    script = (
        "command -v python3 && command -v python"
        ' && /usr/local/bin/python3 -c \'import ssl, sqlite3, sys, zoneinfo; zoneinfo.ZoneInfo("Europe/Paris");'
        ' print("%d.%d" % sys.version_info[:2])\''
        # The generated Dockerfile's user, verbatim.
        " && groupadd --system --gid 10001 app"
        " && useradd --system --no-log-init --uid 10001 --gid app --home-dir /app --no-create-home"
        " --shell /usr/sbin/nologin app && id -u app"
    )
    proc = lab.client(image, "sh", "-c", script)
    assert proc.returncode == 0, proc.stderr
    # The real minor version where Debian has it (3.13 in trixie, 3.14 in sid),
    # else trixie's 3.13, and the image says which.
    real = version if version in images.PYTHONS else "3.13"
    assert proc.stdout.split() == ["/usr/local/bin/python3", "/usr/local/bin/python", real, "10001"]
    label = settings["Labels"]["org.copier-django-celery.standin.python"]
    assert f"python:{version}{PYTHON_TAG}" in label and f" {real}, whatever" in label


def test_uv(lab, tmp_path):
    image = images.standin(UV)
    tag = UV.rpartition(":")[2]
    assert docker("run", "--rm", image, "--version").stdout.startswith(f"uv {tag}.")
    assert docker("run", "--rm", "--entrypoint", "/uvx", image, "--version").stdout.startswith(f"uvx {tag}.")
    # Distroless: the two binaries and nothing else, not even a shell.
    assert docker("run", "--rm", "--entrypoint", "/bin/sh", image, "-c", "true", check=False).returncode != 0

    # The generated Dockerfile's use of it: uv from this image, the stand-in
    # Python, no downloads; the venv works in a second stage from the same image.
    python = images.standin(f"python:{PYTHON_VERSIONS[0]}{PYTHON_TAG}")
    (tmp_path / "pyproject.toml").write_text(
        f'[project]\nname = "probe"\nversion = "0"\nrequires-python = ">={PYTHON_VERSIONS[0]}"\n'
        "dependencies = []\n\n[tool.uv]\npackage = false\n"
    )
    (tmp_path / "Dockerfile").write_text(
        f"FROM {python} AS build\n"
        f"COPY --from={image} /uv /bin/uv\n"
        "ENV UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=/app/.venv UV_COMPILE_BYTECODE=1\n"
        "WORKDIR /app\nCOPY pyproject.toml .\n"
        "RUN uv lock --offline && uv sync --locked --offline --no-dev\n"
        f"FROM {python}\nCOPY --from=build /app /app\n"
        'CMD ["/app/.venv/bin/python", "-c", "import sys; print(sys.prefix)"]\n'
    )
    built = f"{lab.prefix}-uv-probe"
    lab.images.append(built)
    docker("build", "--quiet", "--tag", built, str(tmp_path), timeout=300)
    assert docker("run", "--rm", built).stdout.strip() == "/app/.venv"
