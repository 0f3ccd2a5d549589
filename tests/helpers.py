"""Shared machinery of the template's test suite.

Rendering (with a per-session cache), the shared virtualenv for generated
projects, the test services (unique PostgreSQL databases, Redis DB numbers,
RabbitMQ vhosts, private redis-server processes) and process handling.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import copier
import yaml

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"
# The template's questions, as copier.yml declares them.
QUESTIONS = yaml.safe_load((ROOT / "copier.yml").read_text())
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

REDIS = ("127.0.0.1", 6379)
POSTGRES = ("127.0.0.1", 5432)
RABBITMQ = ("127.0.0.1", 5672)

# Every dependency any variant's pyproject.toml can ask for, plus the test
# tools the boot tests use. One virtualenv serves every variant.
PROJECT_REQUIREMENTS = [
    "django>=5.2,<5.3",
    "celery>=5.7,<6",
    "kombu[redis]>=5.7,<5.8",  # the generated pin (Redis broker): ops/transport.py subclasses kombu
    "redis[hiredis]>=8.1,<9",
    "amqp>=5.4,<6",
    "django-celery-beat>=2.9,<3",
    "django-celery-results>=2.6,<3",
    "flower>=2.2,<3",
    "psycopg[binary]>=3.3,<4",
    "django-environ>=0.14,<0.15",
    "gunicorn>=27,<28",
    "prometheus-client>=0.26,<0.27",
    "django-prometheus>=2.5,<3",
    "python-json-logger>=4.2,<5",
    "opentelemetry-sdk>=1.45,<2",
    "opentelemetry-exporter-otlp-proto-http>=1.45,<2",
    "opentelemetry-instrumentation-django>=0.66b1,<0.67",
    "opentelemetry-instrumentation-celery>=0.66b1,<0.67",
    "opentelemetry-instrumentation-psycopg>=0.66b1,<0.67",
    "opentelemetry-instrumentation-redis>=0.66b1,<0.67",
    "whitenoise>=6.12,<7",
    "tzdata>=2026.1",
    "sentry-sdk[django,celery]>=2.75,<3",
    "honcho>=2,<3",
    "pytest>=9,<10",
    "pytest-django>=4.14,<5",
    "ruff>=0.17,<0.18",
]


# --- Rendering -----------------------------------------------------------------


def render(destination: Path, answers: dict, *, src: Path | str = ROOT, vcs_ref: str | None = "HEAD") -> Path:
    """Render the template into `destination` with `answers` (defaults for the rest).

    HEAD (with any uncommitted changes), not the newest tag Copier would pick
    by default: the tests test the code in front of them.
    """
    copier.run_copy(
        str(src),
        str(destination),
        data=answers,
        defaults=True,
        unsafe=True,
        quiet=True,
        vcs_ref=vcs_ref,
    )
    return destination


def answers_key(answers: dict) -> str:
    return hashlib.sha1(repr(sorted(answers.items())).encode()).hexdigest()[:12]


# --- The shared virtualenv -----------------------------------------------------


def interpreter(version: str) -> str:
    """This machine's Python `version` (pyenv's or on PATH): uv must not download one."""
    for candidate in sorted(Path("/root/.pyenv/versions").glob(f"{version}.*")):
        if (candidate / "bin" / "python3").exists():
            return str(candidate / "bin" / "python3")
    found = shutil.which(f"python{version}")
    if found is None:
        raise AssertionError(f"no Python {version} on this machine")
    return found


# Django series -> the Python its shared virtualenv runs on: this interpreter
# for 5.2; Django 6 needs 3.12 or later.
DJANGO_PYTHON = {"5.2": None, "6.0": "3.13"}


def project_venv(django_version: str = "5.2") -> Path:
    """A virtualenv with every generated project's dependencies, made once per
    Django series.

    Keyed by the requirement list, shared by xdist workers (file lock) and kept
    in .cache/ between runs; uv makes a warm rebuild take about a second.
    """
    from filelock import FileLock

    major, minor = django_version.split(".")
    requirements = [
        f"django>={django_version},<{major}.{int(minor) + 1}" if r.startswith("django>=") else r
        for r in PROJECT_REQUIREMENTS
    ]
    python = sys.executable if DJANGO_PYTHON[django_version] is None else interpreter(DJANGO_PYTHON[django_version])
    digest = hashlib.sha1("\n".join([python, *requirements]).encode()).hexdigest()[:12]
    venv = CACHE / f"venv-{digest}"
    CACHE.mkdir(exist_ok=True)
    with FileLock(str(venv) + ".lock"):
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
            subprocess.run([uv, "venv", "--quiet", "--python", python, str(venv)], check=True)
            subprocess.run(
                [uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), *requirements],
                check=True,
            )
            (venv / ".complete").touch()
    return venv


def project_env(venv: Path, **overrides: str) -> dict:
    """The environment a generated project's commands run in: production-like,
    with the venv first on PATH. `overrides` win."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(
            ("DJANGO_", "CELERY_", "FLOWER_", "DATABASE_URL", "VIRTUAL_ENV", "METRICS_", "PROMETHEUS_")
        )
    }
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
        PYTHONDONTWRITEBYTECODE="1",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_DEBUG="false",
        DJANGO_ALLOWED_HOSTS="localhost,127.0.0.1,testserver",
    )
    env.update(overrides)
    return env


def run(
    cmd: list[str] | str, cwd: Path, env: dict, timeout: float = 300, check: bool = True
) -> subprocess.CompletedProcess:
    """Run a command, and on failure show its output in the assertion."""
    if isinstance(cmd, str):
        cmd = shlex.split(cmd)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{shlex.join(cmd)} exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc


# --- Services ------------------------------------------------------------------


def reachable(address: tuple[str, int], timeout: float = 1.0) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(address, timeout=timeout):
        return True
    return False


def require(name: str, address: tuple[str, int]) -> None:
    """Skip when a service is missing on a developer machine; fail in CI."""
    import pytest

    if reachable(address):
        return
    message = f"{name} is not reachable at {address[0]}:{address[1]}"
    if IN_CI:
        pytest.fail(f"{message}; CI must provide it", pytrace=False)
    pytest.skip(message)


PORT_BASE, PORT_SLICES = 20000, 8
_next_port: itertools.cycle | None = None


def _ports() -> itertools.cycle:
    """Ports below the kernel's ephemeral range, a slice for each xdist worker.

    An outgoing connection takes its local port from the ephemeral range
    (ip_local_port_range), so one of them could take a port from there between
    free_port() and the bind of the service it was given to (a worker's metrics
    listener failed so). Each slice starts at a random point: two runs at once
    do not walk it in step."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:]
    size = (low - PORT_BASE) // PORT_SLICES
    first = PORT_BASE + (int(worker) % PORT_SLICES if worker.isdigit() else 0) * size
    ports = list(range(first, first + size))
    offset = secrets.randbelow(size)
    return itertools.cycle(ports[offset:] + ports[:offset])


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on or connects from, for a service to bind."""
    global _next_port
    if _next_port is None:
        _next_port = _ports()
    for _ in range(1000):
        port = next(_next_port)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def wait_until(predicate, timeout: float, interval: float = 0.2):
    """predicate()'s first true value within `timeout` seconds, else its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(interval)
    return predicate()


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reachable(("127.0.0.1", port), timeout=0.5):
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before opening port {port}")
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on port {port} after {timeout} s")


@contextlib.contextmanager
def postgres_database(prefix: str = "cdc"):
    """A new, empty PostgreSQL database; dropped afterwards. Yields its URL."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgres://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'DROP DATABASE IF EXISTS "test_{name}" WITH (FORCE)')


@contextlib.contextmanager
def redis_database(count: int = 1, address: tuple[str, int] = REDIS):
    """Claim `count` empty Redis DB numbers (of 1-15) on the shared server.

    A DB is claimed by an atomic SET NX of a marker key, so parallel tests never
    share one; on exit each claimed DB is flushed (it held only our keys).
    Yields the DB numbers.
    """
    import redis

    marker = "copier-django-celery:test-claim"
    claimed: list[int] = []
    token = uuid.uuid4().hex
    try:
        for _attempt in range(100):
            for number in range(1, 16):
                if len(claimed) == count:
                    break
                if number in claimed:
                    continue
                client = redis.Redis(*address, db=number)
                if client.dbsize() == 0 and client.set(marker, token, nx=True):
                    claimed.append(number)
            if len(claimed) == count:
                break
            time.sleep(0.5)
        else:
            raise RuntimeError("no free Redis DB numbers")
        yield claimed
    finally:
        for number in claimed:
            redis.Redis(*address, db=number).flushdb()


@contextlib.contextmanager
def rabbitmq_vhost(prefix: str = "cdc"):
    """A new RabbitMQ vhost with guest's permissions; deleted afterwards. Yields its URL."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    subprocess.run([ctl, "-q", "add_vhost", name], check=True, capture_output=True, timeout=60)
    try:
        subprocess.run(
            [ctl, "-q", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield f"amqp://guest:guest@127.0.0.1:5672/{name}"
    finally:
        subprocess.run([ctl, "-q", "delete_vhost", name], capture_output=True, timeout=60)


@dataclass
class PrivateRedis:
    """A redis-server of our own on a free port, to kill and restart at will."""

    directory: Path
    password: str | None = None
    appendonly: bool = True
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    # (certificate chain file, key file): TLS only, on `port` (rediss://).
    tls: tuple[Path, Path] | None = None
    # A node in cluster mode (cluster_enabled:1), alone and without slots.
    cluster: bool = False
    # More redis-server options (a replica's --replicaof and --masterauth).
    extra: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"{'rediss' if self.tls else 'redis'}://{auth}127.0.0.1:{self.port}"

    def start(self) -> PrivateRedis:
        self.directory.mkdir(parents=True, exist_ok=True)
        cmd = [
            shutil.which("redis-server") or "/usr/bin/redis-server",
            # TLS only, when it serves TLS: no plain port.
            "--port", "0" if self.tls else str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        if self.password:
            cmd += ["--requirepass", self.password]
        if self.cluster:
            cmd += ["--cluster-enabled", "yes", "--cluster-config-file", str(self.directory / "nodes.conf")]
        if self.tls:
            cmd += ["--tls-port", str(self.port), "--tls-cert-file", str(self.tls[0])]
            cmd += ["--tls-key-file", str(self.tls[1]), "--tls-auth-clients", "no"]
        cmd += self.extra
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, proc=self.proc)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


def http(url: str, *, auth: str | None = None, method: str = "GET", host: str | None = None) -> tuple[int, str]:
    """(status, body) of a request; `auth` is "user:password" for basic auth.

    TLS certificates are not checked: the tests' nginx uses a self-signed one.
    """
    import ssl
    import urllib.error
    import urllib.request
    from base64 import b64encode

    request = urllib.request.Request(url, method=method, data=b"{}" if method == "POST" else None)
    if auth:
        request.add_header("Authorization", "Basic " + b64encode(auth.encode()).decode())
    if host:
        request.add_header("Host", host)
    context = ssl._create_unverified_context()
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


# --- A browser -------------------------------------------------------------------

# Debian's `chromium` and `chromium-driver` (.ci/apt-packages).
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def flower_queue_lengths(port: int, auth: str) -> dict:
    """{queue: messages waiting} as Flower's API on `port` reports them, for the
    queues its workers consume; {} while it cannot tell."""
    status, body = http(f"http://127.0.0.1:{port}/flower/api/queues/length", auth=auth)
    queues = json.loads(body).get("active_queues", []) if status == 200 else []
    return {queue["name"]: queue.get("messages") for queue in queues}


def chromium(user_data_dir: Path, *arguments: str):
    """Headless Chromium under Selenium, which uses Debian's driver and downloads nothing."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    for path in (CHROMIUM, CHROMEDRIVER):
        assert path.exists(), f"{path} is missing: apt-get install chromium chromium-driver (.ci/apt-packages)"
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not download anything
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    base = ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--no-proxy-server"]  # no-sandbox: root in CI
    for argument in (*base, f"--user-data-dir={user_data_dir}", *arguments):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=DriverService(executable_path=str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(0)
    return driver


# --- Processes -------------------------------------------------------------------


@dataclass
class Service:
    """A long-running process of a generated project, logging to a file."""

    name: str
    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for_log(self, pattern: str, timeout: float = 60.0, start: int = 0) -> re.Match:
        """Wait until the log (from character `start`) matches `pattern`."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            match = regex.search(self.output(), start)
            if match:
                return match
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(
            f"{self.name}: no /{pattern}/ in its log after {timeout} s "
            f"(exit code {self.proc.poll()})\n{self.output()[-4000:]}"
        )

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM the main process and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                # A Celery process logs every thread's stack on SIGUSR1: say where it hung.
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(signal.SIGUSR1)
                time.sleep(1)
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group (main process and children)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)


def start(name: str, cmd: list[str] | str, cwd: Path, env: dict, logdir: Path) -> Service:
    """Start `cmd` in its own process group, logging to logdir/name.log."""
    if isinstance(cmd, str):
        cmd = shlex.split(cmd)
    logdir.mkdir(parents=True, exist_ok=True)
    log = logdir / f"{name}.log"
    handle = log.open("ab")
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    handle.close()
    return Service(name=name, proc=proc, log=log)


def procfile(project: Path) -> dict[str, str]:
    """The Procfile's processes, by name, exactly as written."""
    entries = {}
    for line in (project / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = command.strip()
    return entries


def once_per_run(request, key: str) -> None:
    """Fail when `key` is set up twice in one xdist run.

    A booted project is shared by the tests of its xdist_group; if the group
    were not honoured (pytest 9.2 with pytest-xdist 3.8 silently ignores it),
    every worker would boot its own copy, slowly and out of order.
    """
    import pytest

    workerinput = getattr(request.config, "workerinput", None)
    if workerinput is None:
        return
    CACHE.mkdir(exist_ok=True)
    marker = CACHE / f"setup-{workerinput['testrunuid']}-{key}"
    try:
        marker.touch(exist_ok=False)
    except FileExistsError:
        pytest.fail(f"{key} was set up by two xdist workers: --dist loadgroup is not grouping tests")
