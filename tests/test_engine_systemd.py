"""The systemd deployment under a real systemd: PID 1 of a Debian trixie container.

The default project (Redis broker, django-db results, PostgreSQL, beat,
Flower, queues default/email/render) is copied to /srv/<slug> and installed
with its own deploy/systemd/install.sh, exactly as docs/deploy-systemd.md
says: a first run that stops at app.env, the secrets filled in, a second run.
redis-server and PostgreSQL are Debian's, started by their own units in the
same container (a single host). Then, with systemd 257 in charge:

- every unit is active and stays up (no restarts);
- every line of every unit is what `systemctl show` reports, sandbox included,
  and the sandbox holds inside each running service (/proc/<MainPID>/status,
  its mount namespace);
- each queue round-trips a task (`celery_healthcheck`, run as the docs say)
  and gunicorn answers /healthz/;
- each unit answers Prometheus on the port deploy/prometheus/systemd.yml
  names, a worker with what its pool's children counted (PrivateTmp=);
- WatchdogSec= kills a worker whose main process is stopped, and Restart=
  brings a new one that serves;
- `systemctl stop` of a worker during long tasks is a warm shutdown: the
  running tasks complete, the queued ones wait in the broker, none is lost.

Everything goes through `docker exec` and `docker cp`; enginelab/systemd_host.py
builds the image and runs the container.
"""

from __future__ import annotations

import errno
import json
import re
import secrets
import shlex
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from deploy_host import answers, host_paths, parse_env_file, parse_unit, queue_env_files, unit_files, value, values
from enginelab import engine, systemd_host
from enginelab.docs import doc_block
from obslab.exposition import sample

from helpers import ROOT, render

pytestmark = [pytest.mark.boot, pytest.mark.xdist_group("engine-systemd")]

SLOWTASK = ROOT / "tests" / "fixtures" / "slowtask"
HOSTNAME = "sdhost"
TIMESPAN = {"us": 1e-6, "ms": 1e-3, "s": 1, "min": 60, "h": 3600}


def seconds(timespan: str) -> float:
    """A systemd time span as `systemctl show` prints it ("6min", "1min 30s", "45s")."""
    total = 0.0
    for number, unit in re.findall(r"([\d.]+)\s*(us|ms|min|s|h)", timespan):
        total += float(number) * TIMESPAN[unit]
    return total


@dataclass
class Deployment:
    host: systemd_host.SystemdHost
    project: Path
    data: dict = field(default_factory=dict)
    secrets: dict = field(default_factory=dict)
    installs: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)

    def __post_init__(self):
        self.data = answers(self.project)
        self.slug = self.data["project_slug"]
        self.paths = host_paths(self.project)
        self.queues = list(queue_env_files(self.project))

    # --- Units -------------------------------------------------------------------

    def units(self) -> dict[str, str]:
        """Every installed unit by name -> its file in deploy/systemd/ (worker@ once per queue)."""
        found = {}
        for name in unit_files(self.project):
            if name.endswith("@.service"):
                for queue in self.queues:
                    found[name.replace("@.service", f"@{queue}.service")] = name
            else:
                found[name] = name
        return found

    def services(self) -> list[str]:
        return [name for name in self.units() if name.endswith(".service")]

    def worker(self, queue: str) -> str:
        return f"{self.slug}-worker@{queue}.service"

    def unit_lines(self, name: str) -> dict:
        return parse_unit(unit_files(self.project)[self.units()[name]].read_text())

    # --- Commands as the docs run them -------------------------------------------------

    def as_service(self, *argv: str, env: dict | None = None, timeout: float = 180, check: bool = True):
        """`argv` the way the docs run manage.py: systemd-run as the service user,
        in the checkout, with app.env."""
        setenv = [f"--setenv={key}={val}" for key, val in (env or {}).items()]
        return self.host.exec(
            "systemd-run", "--quiet", "--wait", "--pipe", "--collect", f"--uid={self.slug}",
            f"--working-directory={self.paths['app']}", "-p", f"EnvironmentFile={self.paths['conf']}/app.env",
            *setenv, *argv, check=check, timeout=timeout,
        )  # fmt: skip

    def manage(self, *args: str, **kwargs):
        return self.as_service(f"{self.paths['venv']}/bin/python", "manage.py", *args, **kwargs)

    def healthcheck(self, *queues: str, within: float = 120) -> dict[str, str]:
        """queue -> the node that answered, once every queue answers; bounded."""
        wanted = list(queues or self.queues)
        options = [arg for queue in wanted for arg in ("--queue", queue)]
        deadline = time.monotonic() + within
        out = ""
        for _ in range(int(within / 5) + 1):
            proc = self.manage("celery_healthcheck", "--timeout", "20", *options, check=False, timeout=120)
            out = proc.stdout + proc.stderr
            nodes = dict(re.findall(r"^(\S+)\s+ok\s+(\S+)", proc.stdout, re.M))
            if proc.returncode == 0 and set(nodes) == set(wanted):
                return nodes
            if time.monotonic() > deadline:
                break
            time.sleep(3)
        units = [self.worker(queue) for queue in wanted]
        raise AssertionError(f"healthcheck of {wanted} never passed:\n{out[-3000:]}\n{self.host.journal(*units)}")

    def redis(self, *argv: str) -> str:
        return self.host.exec("redis-cli", "--no-auth-warning", "-a", self.secrets["redis"], "-n", "0", *argv).stdout

    def sql(self, query: str) -> list[list[str]]:
        out = self.host.exec("runuser", "-u", "postgres", "--", "psql", "-d", self.slug, "-tAF", "\t", "-c",
                             query).stdout  # fmt: skip
        return [line.split("\t") for line in out.splitlines() if line]

    def now(self) -> float:
        return float(self.host.exec("date", "+%s.%N").stdout)

    def journal_since(self, unit: str, since: float) -> str:
        return self.host.exec("journalctl", "--no-pager", "-o", "short-unix", "-u", unit,
                              f"--since=@{int(since) - 1}").stdout  # fmt: skip

    # --- install.sh, as docs/deploy-systemd.md says --------------------------------

    def documented(self, block_id: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        """Run a command block of docs/deploy-systemd.md on the host, as written but
        for the two steps a test does its own way: `git clone` (the rendered tree is
        copied to /srv/<slug> instead) and `editor` (install() fills app.env in)."""
        lines = [
            line for line in doc_block("deploy-systemd.md", block_id).splitlines()
            if not re.match(r"sudo (git clone|editor) ", line)
        ]  # fmt: skip
        script = "\n".join([f"cd {self.paths['app']}", *lines])  # the block's relative paths: the checkout
        return self.host.exec("bash", "-eo", "pipefail", "-c", script, check=check, timeout=timeout)

    def install(self) -> None:
        app, conf = self.paths["app"], self.paths["conf"]
        # `git clone` into /srv/<slug>: the tree without the untracked local .env.
        self.host.copy_tree(self.project, app, ignore=("__pycache__", ".env"))
        started = time.monotonic()
        self.installs.append(self.documented("install", check=False))
        self.timings["first install.sh"] = time.monotonic() - started
        self.single_host_services()
        # "fill in the secrets": the database and broker of this host, and real secrets.
        app_env = self.host.exec("cat", f"{conf}/app.env").stdout
        filled = {
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DATABASE_URL": f"postgres://{self.slug}:{self.secrets['postgres']}@127.0.0.1:5432/{self.slug}",
            "CELERY_BROKER_URL": f"redis://:{self.secrets['redis']}@127.0.0.1:6379/0",
            "FLOWER_PASSWORD": self.secrets["flower"],
        }
        for key, val in filled.items():
            app_env, count = re.subn(rf"^{key}=.*$", f"{key}={val}", app_env, flags=re.M)
            assert count == 1, f"app.env.example has no {key}= line"
        assert "change-me" not in app_env, app_env
        # As `sudo editor` leaves it: the same file, owner and mode.
        self.host.exec("sh", "-c", 'cat > "$1"', "sh", f"{conf}/app.env", input=app_env)
        started = time.monotonic()
        self.installs.append(self.documented("secrets", check=False))
        self.timings["second install.sh"] = time.monotonic() - started
        second = self.installs[-1]
        assert second.returncode == 0, f"install.sh, second run:\n{second.stdout[-4000:]}\n{second.stderr[-4000:]}"

    def single_host_services(self) -> None:
        """Debian's redis-server and PostgreSQL, with the passwords app.env will name."""
        self.secrets = {"redis": secrets.token_hex(16), "postgres": secrets.token_hex(16),
                        "flower": secrets.token_hex(12)}  # fmt: skip
        self.host.sh(
            f"printf '\\nrequirepass {self.secrets['redis']}\\n' >> /etc/redis/redis.conf\n"
            "systemctl restart redis-server\n"
            f"runuser -u postgres -- psql -v ON_ERROR_STOP=1 -q "
            f"-c \"CREATE ROLE {self.slug} LOGIN PASSWORD '{self.secrets['postgres']}'\"\n"
            f"runuser -u postgres -- createdb -O {self.slug} {self.slug}\n"
        )


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    engine.require_engine()
    started = time.monotonic()
    project = render(tmp_path_factory.mktemp("engine-systemd") / "project", {})
    tag = systemd_host.image()
    image_ready = time.monotonic()
    host = systemd_host.SystemdHost.start(tag, hostname=HOSTNAME)
    try:
        deployment = Deployment(host, project)
        deployment.timings["render and image"] = image_ready - started
        deployment.timings["boot"] = time.monotonic() - image_ready
        deployment.install()
        ready = time.monotonic()
        deployment.healthcheck()
        deployment.timings["first healthcheck"] = time.monotonic() - ready
        yield deployment
        print("\ntimings:", {key: round(val, 1) for key, val in deployment.timings.items()})
    finally:
        host.remove()


def test_install_sh_runs_as_documented(deployment):
    first, second = deployment.installs
    conf, slug = deployment.paths["conf"], deployment.slug
    # First run: stops at app.env, copied from the example, for root and the service user only.
    assert first.returncode == 2, first.stderr[-3000:]
    assert f"fill in the secrets of {conf}/app.env, then run me again" in first.stderr
    assert second.returncode == 0
    host = deployment.host
    stat = host.exec(
        "stat",
        "-c",
        "%U:%G %a",
        f"{conf}/app.env",
        *(f"{conf}/queues/{queue}.env" for queue in deployment.queues),
        deployment.paths["state"],
    ).stdout.split("\n")
    assert stat[: 1 + len(deployment.queues)] == [f"root:{slug} 640"] * (1 + len(deployment.queues)), stat
    assert stat[1 + len(deployment.queues)] == f"{slug}:{slug} 700", stat
    assert host.exec("getent", "passwd", slug).stdout.strip().endswith(":/usr/sbin/nologin")
    # The broker the docs ask for: Redis 6.2 or later (BLMOVE).
    redis = re.search(r"v=(\d+)\.(\d+)", host.exec("redis-server", "--version").stdout)
    assert (int(redis.group(1)), int(redis.group(2))) >= (6, 2), redis.group(0)
    # The virtualenv's Python is the one `.python-version` asks for, outside any home.
    python = host.exec("readlink", "-f", f"{deployment.paths['venv']}/bin/python").stdout.strip()
    wanted = (deployment.project / ".python-version").read_text().strip()
    assert re.fullmatch(rf"/usr(/local)?/bin/python{re.escape(wanted)}", python), python
    # Migrated as the service user, static files collected into the checkout.
    assert deployment.sql("SELECT count(*) FROM django_migrations")[0][0] != "0"
    host.exec("test", "-s", f"{deployment.paths['app']}/staticfiles/admin/css/base.css")
    # Enabled: the target by multi-user.target, every service by the target.
    for unit in deployment.units():
        assert host.exec("systemctl", "is-enabled", unit, check=False).stdout.strip() == "enabled", unit


def test_every_unit_is_active_and_stays_up(deployment):
    host = deployment.host
    target = f"{deployment.slug}.target"
    assert host.show(target, "ActiveState")["ActiveState"] == "active"
    first = {unit: host.show(unit, "ActiveState", "SubState", "MainPID", "NRestarts", "Result")
             for unit in deployment.services()}  # fmt: skip
    time.sleep(6)  # past RestartSec=: a unit in a crash loop would show a restart by now
    for unit, before in first.items():
        after = host.show(unit, "ActiveState", "SubState", "MainPID", "NRestarts", "Result")
        journal = host.journal(unit, lines=40)
        assert (after["ActiveState"], after["SubState"]) == ("active", "running"), (unit, after, journal)
        assert after["NRestarts"] == "0" and after["Result"] == "success", (unit, after, journal)
        assert after["MainPID"] == before["MainPID"] != "0", (unit, before, after)
    assert host.exec("systemctl", "--failed", "--plain", "--no-legend").stdout.strip() == ""


# Unit line -> how `systemctl show` reports it. Every [Service] line of every
# unit must be listed here, so that a new directive cannot go unchecked.
SAME = "same"
PROPERTIES = {
    "Type": SAME, "NotifyAccess": SAME, "WorkingDirectory": SAME, "KillMode": SAME, "Restart": SAME,
    "SyslogIdentifier": SAME, "User": SAME, "Group": SAME, "NoNewPrivileges": SAME,
    "CapabilityBoundingSet": SAME, "AmbientCapabilities": SAME, "RestrictSUIDSGID": SAME, "RemoveIPC": SAME,
    "ProtectSystem": SAME, "StateDirectory": SAME, "StateDirectoryMode": SAME, "ProtectHome": SAME,
    "PrivateTmp": SAME, "PrivateDevices": SAME, "PrivateMounts": SAME, "UMask": SAME,
    "ProtectKernelTunables": SAME, "ProtectKernelModules": SAME, "ProtectKernelLogs": SAME,
    "ProtectControlGroups": SAME, "ProtectClock": SAME, "ProtectHostname": SAME, "ProtectProc": SAME,
    "ProcSubset": SAME, "RestrictNamespaces": SAME, "RestrictRealtime": SAME, "LockPersonality": SAME,
    "SystemCallArchitectures": SAME,
    "TimeoutStopSec": "TimeoutStopUSec", "RestartSec": "RestartUSec", "WatchdogSec": "WatchdogUSec",
    "WatchdogSignal": "WatchdogSignal", "RestrictAddressFamilies": "RestrictAddressFamilies",
    "SystemCallErrorNumber": "SystemCallErrorNumber", "SystemCallFilter": "SystemCallFilter",
    "Environment": "Environment", "EnvironmentFile": "EnvironmentFiles", "ExecStart": "ExecStart",
    "ExecReload": "ExecReload",
}  # fmt: skip


def syscall_groups(host) -> dict[str, list[str]]:
    """systemd's own system call groups (`systemd-analyze syscall-filter`), as this systemd knows them."""
    groups: dict[str, list[str]] = {}
    current = None
    for line in host.exec("systemd-analyze", "syscall-filter", "--no-pager").stdout.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.strip() and not line.strip().startswith("#") and current is not None:
            current.append(line.strip())
    return groups


def expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    found: set[str] = set()
    for name in names:
        found |= expand(groups[name], groups) if name.startswith("@") else {name}
    return found


def expected_filter(lines: list[str], groups) -> tuple[set[str], set[str]]:
    """The allow list that SystemCallFilter= lines add up to, and every name they deny."""
    allowed: set[str] = set()
    denied: set[str] = set()
    for number, line in enumerate(lines):
        deny = line.startswith("~")
        names = expand(line.removeprefix("~").split(), groups)
        assert number > 0 or not deny, "a deny list first: this check expects an allow list"
        allowed, denied = (allowed - names, denied | names) if deny else (allowed | names, denied - names)
    return allowed, denied


def specifiers(text: str, unit: str) -> str:
    instance = unit.split("@", 1)[1].removesuffix(".service") if "@" in unit else ""
    return text.replace("%i", instance).replace("%H", HOSTNAME).replace("%S", "/var/lib")


def test_every_line_of_every_unit_is_in_force(deployment):
    """`systemctl show` against each unit's own lines: the sandbox, stop and restart policy, commands."""
    host = deployment.host
    groups = syscall_groups(host)
    checked = {}
    for unit in deployment.services():
        lines = deployment.unit_lines(unit)
        keys = list(dict.fromkeys(key for key, _ in lines["Service"]))
        assert set(keys) <= set(PROPERTIES), f"{unit}: no check for {set(keys) - set(PROPERTIES)}"
        shown = host.show(unit, *[key if PROPERTIES[key] == SAME else PROPERTIES[key] for key in keys])
        raw = host.exec("systemctl", "show", unit, "--property=EnvironmentFiles").stdout.splitlines()
        for key in keys:
            prop = key if PROPERTIES[key] == SAME else PROPERTIES[key]
            want = specifiers(value(lines, "Service", key), unit)
            got = shown.get(prop)
            if key.endswith("Sec"):
                assert seconds(got) == float(want), (unit, key, want, got)
            elif key == "WatchdogSignal":
                assert got == str(int(getattr(signal, want))), (unit, key, want, got)
            elif key == "SystemCallErrorNumber":
                assert got == str(getattr(errno, want)), (unit, key, want, got)
            elif key == "RestrictAddressFamilies":
                assert set(got.split()) == set(want.split()), (unit, key, want, got)
            elif key == "SystemCallFilter":
                # systemd lists the groups' names; the filter it loads leaves out the few that
                # its libseccomp cannot resolve (aliases such as newfstat, calls newer than it).
                wanted, denied = expected_filter(values(lines, "Service", key), groups)
                allowed = set(got.split())
                assert allowed <= wanted and len(wanted - allowed) <= 10, (unit, sorted(allowed ^ wanted))
                assert allowed.isdisjoint(denied) and {"read", "openat", "connect", "clone3"} <= allowed, unit
                assert {"mount", "setuid", "chown", "reboot", "setrlimit", "sched_setaffinity"}.isdisjoint(allowed)
                checked.setdefault("SystemCallFilter: unresolved", sorted(wanted - allowed))
            elif key == "Environment":
                for line in values(lines, "Service", key):
                    assert set(shlex.split(specifiers(line, unit))) <= set(got.split()), (unit, line, got)
            elif key == "EnvironmentFile":
                files = [specifiers(line, unit) for line in values(lines, "Service", key)]
                assert [line.split("=", 1)[1] for line in raw] == [f"{f} (ignore_errors=no)" for f in files], raw
            elif key in ("ExecStart", "ExecReload"):
                argv = specifiers(want, unit).split()
                assert f"path={argv[0]} ;" in got and f"argv[]={' '.join(argv)} ;" in got, (unit, want, got)
            else:
                assert got == want, (unit, key, want, got)
            checked.setdefault(key, []).append(unit)
        # [Unit]: part of the target.
        assert host.show(unit, "PartOf")["PartOf"] == value(lines, "Unit", "PartOf"), unit
    # The live exposure score, as docs/deploy-systemd.md gives it.
    for unit in deployment.services():
        out = host.exec("systemd-analyze", "security", "--no-pager", unit).stdout
        score = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", out).group(1))
        assert score <= 2.0, (unit, score, out[-2000:])
        checked.setdefault("exposure", []).append(f"{unit}={score}")
    print("\nchecked:", json.dumps(checked, indent=1))
    assert {"ProtectSystem", "NoNewPrivileges", "CapabilityBoundingSet", "SystemCallFilter", "User"} <= set(checked)


def test_the_sandbox_holds_inside_each_running_service(deployment):
    """From each service's MainPID: no privileges, the filter, the user, a read-only system."""
    host, slug, paths = deployment.host, deployment.slug, deployment.paths
    uid, gid = host.exec("id", "-u", slug).stdout.strip(), host.exec("id", "-g", slug).stdout.strip()
    host.exec("touch", "/tmp/outside-marker", "/root/.outside-marker")
    for unit in deployment.services():
        lines = deployment.unit_lines(unit)
        pid = host.show(unit, "MainPID")["MainPID"]
        assert pid != "0", unit
        status = dict(
            line.split(":\t", 1)
            for line in host.exec("cat", f"/proc/{pid}/status").stdout.splitlines()
            if ":\t" in line
        )
        assert status["NoNewPrivs"].strip() == "1", (unit, status["NoNewPrivs"])
        for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(status[caps], 16) == 0, (unit, caps, status[caps])
        assert status["Seccomp"].strip() == "2", (unit, status["Seccomp"])
        assert status["Uid"].split() == [uid] * 4 and status["Gid"].split() == [gid] * 4, (unit, status["Uid"])
        # Its mount namespace: the checkout, /etc and /usr read-only; no homes; its own /tmp.
        inside = ["nsenter", "-t", pid, "-m", "--"]
        for path in (f"{paths['app']}/.probe", f"{paths['conf']}/.probe", "/usr/.probe", "/var/.probe"):
            proc = host.exec(*inside, "touch", path, check=False)
            assert proc.returncode != 0 and "Read-only file system" in proc.stderr, (unit, path, proc.stderr)
        # ProtectHome=yes: homes are empty and inaccessible (mode 000) in there.
        assert host.exec(*inside, "ls", "-A", "/root", "/home").stdout.split() == ["/home:", "/root:"], unit
        assert host.exec(*inside, "stat", "-c", "%a", "/root").stdout.strip() == "0", unit
        assert host.exec(*inside, "test", "-e", "/tmp/outside-marker", check=False).returncode == 1, unit
        proc_mount = host.exec(*inside, "findmnt", "-no", "OPTIONS", "/proc").stdout
        assert "hidepid=invisible" in proc_mount and "subset=pid" in proc_mount, (unit, proc_mount)
        state = value(lines, "Service", "StateDirectory")
        if state:
            probe = f"{paths['state']}/.probe"
            host.exec(*inside, "touch", probe)
            host.exec(*inside, "rm", probe)
        # The service's own view: other processes hidden, seccomp returns EPERM.
        seen = host.exec(*inside, "setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "ls", "/proc",
                         check=False)  # fmt: skip
        assert "1\n" not in seen.stdout.splitlines(keepends=True), (unit, "PID 1 visible")


def test_each_queue_round_trips_and_web_serves(deployment):
    host, data = deployment.host, deployment.data
    nodes = deployment.healthcheck()
    assert nodes == {queue: f"{queue}@{HOSTNAME}" for queue in deployment.queues}, nodes
    # And exactly as the docs spell it.
    documented = deployment.documented("healthcheck", timeout=180).stdout
    assert dict(re.findall(r"^(\S+)\s+ok\s+(\S+)", documented, re.M)) == nodes, documented
    body, code = host.exec("curl", "-sS", "-w", "\n%{http_code}", "-H", f"Host: {data['domain_name']}",
                           "http://127.0.0.1:8000/healthz/").stdout.rsplit("\n", 1)  # fmt: skip
    assert code == "200" and json.loads(body)["status"] == "ok", (code, body)
    code = host.exec("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: evil.example",
                     "http://127.0.0.1:8000/healthz/").stdout  # fmt: skip
    assert code == "400", code
    if data["use_flower"]:
        url = f"http://127.0.0.1:{data['flower_port']}/flower/"
        assert host.exec("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url).stdout == "401"
        auth = f"admin:{deployment.secrets['flower']}"
        assert host.exec("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-u", auth, url).stdout == "200"


def test_each_unit_answers_prometheus_on_the_ports_of_the_scrape_snippet(deployment):
    """deploy/prometheus/systemd.yml's targets, scraped inside the host after the
    healthcheck's pings: the sandbox (PrivateTmp=, ProtectSystem=) leaves each
    service its metrics directory, and a worker's main process reads what its
    pool's children wrote there."""
    import yaml

    host, data = deployment.host, deployment.data
    deployment.healthcheck()
    config = yaml.safe_load((deployment.project / "deploy/prometheus/systemd.yml").read_text())
    jobs = {
        job["job_name"]: [target for static in job["static_configs"] for target in static["targets"]]
        for job in config["scrape_configs"]
    }
    slug = data["project_slug"]
    assert list(jobs) == [f"{slug}-web", f"{slug}-worker", *([f"{slug}-beat"] if data["use_beat"] else [])]
    scraped = {}
    for targets in jobs.values():
        for target in targets:
            assert target.startswith("127.0.0.1:"), target
            scraped[target] = host.exec("curl", "-sS", "--fail", f"http://{target}/metrics").stdout
    (web,) = jobs[f"{slug}-web"]
    assert sample(scraped[web], "celery_broker_up") == 1.0, scraped[web][-2000:]
    for queue in deployment.queues:
        assert sample(scraped[web], "celery_queue_length", queue=queue) is not None, scraped[web][-2000:]
    # Each worker on the port of its queue file.
    files = queue_env_files(deployment.project)
    ports = {queue: parse_env_file(path.read_text())["METRICS_PORT"] for queue, path in files.items()}
    assert sorted(jobs[f"{slug}-worker"]) == sorted(f"127.0.0.1:{port}" for port in ports.values())
    for queue, port in ports.items():
        text = scraped[f"127.0.0.1:{port}"]
        assert sample(text, "celery_worker_consuming", queue=queue) == 1.0, text[-2000:]
        pinged = sample(text, "celery_task_succeeded_total", name="ops.tasks.ping", queue=queue)
        assert pinged and pinged >= 1, text[-2000:]


def test_watchdog_restarts_a_worker_whose_main_process_is_stopped(deployment):
    host = deployment.host
    queue = deployment.queues[1] if len(deployment.queues) > 1 else deployment.queues[0]
    unit = deployment.worker(queue)
    lines = deployment.unit_lines(unit)
    # docs/deploy-systemd.md promises 60 s: a unit that lost its WatchdogSec= line must fail here too.
    limit = float(value(lines, "Service", "WatchdogSec") or 60)
    before = host.show(unit, "MainPID", "NRestarts")
    since = deployment.now()
    host.exec("kill", "-STOP", before["MainPID"])
    stopped = time.monotonic()

    def restarted():
        now = host.show(unit, "MainPID", "ActiveState", "SubState", "NRestarts")
        if now["MainPID"] not in ("0", before["MainPID"]) and now["ActiveState"] == "active":
            return now
        return None

    after = host.wait_for(f"new MainPID of {unit}", restarted, timeout=limit + 90, interval=0.5)
    elapsed = time.monotonic() - stopped
    deployment.timings["watchdog: SIGSTOP to new MainPID"] = elapsed
    journal = deployment.journal_since(unit, since)
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1, (after, journal[-3000:])
    assert "Watchdog timeout" in journal, journal[-3000:]
    assert re.search(rf"Killing process {before['MainPID']} \(celery\) with signal SIGKILL", journal), journal[-3000:]
    # The kill comes WatchdogSec after the last ping (ops/liveness.py pings every 10 s),
    # the new process RestartSec after the kill.
    killed = float(re.search(r"^([\d.]+) .*Watchdog timeout", journal, re.M).group(1)) - since
    restart_sec = float(value(lines, "Service", "RestartSec"))
    assert limit - 15 <= killed <= limit + 5, (killed, journal[-3000:])
    assert killed + restart_sec - 2 <= elapsed <= killed + restart_sec + 20, (killed, elapsed)
    deployment.timings["watchdog: SIGSTOP to SIGKILL"] = killed
    print(
        f"\nwatchdog: SIGSTOP of {before['MainPID']}, SIGKILL after {killed:.1f} s, "
        f"new MainPID {after['MainPID']} after {elapsed:.1f} s"
    )
    assert deployment.healthcheck(queue) == {queue: f"{queue}@{HOSTNAME}"}


def test_stop_during_long_tasks_is_a_warm_shutdown_and_loses_nothing(deployment):
    """`systemctl stop` while tasks run: they finish, the unit's result is success,
    the queued tasks wait in Redis, and after the next start every task has run."""
    host, paths = deployment.host, deployment.paths
    queue = deployment.queues[-1]
    unit = deployment.worker(queue)
    lines = deployment.unit_lines(unit)
    timeout_stop = float(value(lines, "Service", "TimeoutStopSec"))
    concurrency = int(parse_env_file(queue_env_files(deployment.project)[queue].read_text())["WORKER_CONCURRENCY"])
    # The test-only slow task in the checkout, loaded by this one worker (as `systemctl edit` would).
    host.copy_tree(SLOWTASK, f"{paths['app']}/slowtask")
    dropin = f"/etc/systemd/system/{unit}.d"
    host.exec("mkdir", "-p", dropin)
    host.write(f"{dropin}/slowtask.conf", "[Service]\nEnvironment=DJANGO_SETTINGS_MODULE=slowtask.settings\n")
    host.exec("systemctl", "daemon-reload")
    host.exec("systemctl", "restart", unit, timeout=timeout_stop + 60)
    deployment.healthcheck(queue)

    sleep, count = 8, concurrency + 4
    ids = [str(uuid.uuid4()) for _ in range(count)]
    send = (
        "from slowtask.tasks import slow\n"
        f"for task_id in {ids!r}:\n"
        f"    slow.apply_async(args=['/tmp', {sleep}], queue={queue!r}, task_id=task_id, ignore_result=False)\n"
    )
    sent = deployment.now()
    deployment.manage("shell", "-c", send, env={"DJANGO_SETTINGS_MODULE": "slowtask.settings"})

    def running():
        proc = deployment.as_service(
            f"{paths['venv']}/bin/celery", "-A", "config", "inspect", "active", "--json", "--timeout", "5",
            "--destination", f"{queue}@{HOSTNAME}", check=False, timeout=60,
        )  # fmt: skip
        try:
            active = json.loads(proc.stdout.strip().splitlines()[-1]).get(f"{queue}@{HOSTNAME}", [])
        except (ValueError, IndexError):
            return None
        ids_running = {task["id"] for task in active}
        return ids_running if len(ids_running) == concurrency else None

    active = host.wait_for(f"{concurrency} running slow tasks", running, timeout=60, interval=0.5)
    assert active <= set(ids)
    pid = host.show(unit, "MainPID")["MainPID"]
    signalled = deployment.now()
    started = time.monotonic()
    host.exec("systemctl", "stop", unit, timeout=timeout_stop + 60)
    took = time.monotonic() - started
    deployment.timings["warm stop"] = took
    shown = host.show(unit, "ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
    journal = deployment.journal_since(unit, signalled)
    assert shown["ActiveState"] == "inactive" and shown["Result"] == "success", (shown, journal[-3000:])
    assert shown["ExecMainStatus"] == "0" and shown["ExecMainCode"] == "1", (shown, journal[-3000:])  # exited 0
    assert 1 < took < timeout_stop, took
    assert f"Killing process {pid}" not in journal and "SIGKILL" not in journal, journal[-3000:]
    # The tasks seen running completed, and some only after the stop began: the
    # warm shutdown waited for them. On a loaded machine more may have started
    # between that look and the stop; they completed too.
    done = {row[0]: row for row in deployment.sql(
        "SELECT task_id, status, extract(epoch from date_done) FROM django_celery_results_taskresult "
        f"WHERE task_id IN ({', '.join(repr(i) for i in ids)})")}  # fmt: skip
    assert active <= set(done), (sorted(done), sorted(active), journal[-3000:])
    assert all(row[1] == "SUCCESS" for row in done.values()), done
    after_stop = {task_id for task_id, row in done.items() if float(row[2]) > signalled}
    assert 0 < len(after_stop) <= concurrency, (done, signalled)
    # The others wait on the queue's list in Redis, nowhere else.
    messages = deployment.redis("LRANGE", queue, "0", "-1").splitlines()
    waiting = {json.loads(message)["headers"]["id"] for message in messages}
    assert len(messages) == len(waiting), messages
    assert waiting == set(ids) - set(done), (sorted(waiting), sorted(set(ids) - set(done)))
    assert deployment.redis("LLEN", f"unacked_landing:{queue}").strip() == "0"
    print(f"\nwarm stop: {took:.1f} s, {len(after_stop)} running completed, {len(waiting)} left queued")

    # Next start: every task runs, exactly once; nothing lost.
    host.exec("systemctl", "start", unit)

    def all_done():
        rows = deployment.sql(
            "SELECT task_id, status FROM django_celery_results_taskresult "
            f"WHERE task_id IN ({', '.join(repr(i) for i in ids)})"
        )
        return rows if len(rows) == count else None

    rows = host.wait_for("every slow task's result", all_done, timeout=(count // concurrency + 1) * sleep + 120)
    assert sorted(row[0] for row in rows) == sorted(ids) and {row[1] for row in rows} == {"SUCCESS"}, rows
    assert deployment.redis("LLEN", queue).strip() == "0"
    # Exactly once: each task succeeded once, across both of the worker's lives.
    journal = deployment.journal_since(unit, sent)
    runs = {task_id: len(re.findall(rf"slowtask\.tasks\.slow\[{task_id}\] succeeded", journal)) for task_id in ids}
    assert set(runs.values()) == {1}, (runs, journal[-3000:])
    host.exec("rm", "-r", dropin)
    host.exec("systemctl", "daemon-reload")
    host.exec("systemctl", "restart", unit, timeout=timeout_stop + 60)


def test_scaling_a_queue_as_documented(deployment):
    """Last: the docs give the render queue's worker 8 processes and restart it."""
    host, unit = deployment.host, deployment.worker("render")
    before = host.show(unit, "MainPID")["MainPID"]
    deployment.documented("scale", timeout=600)
    main = host.show(unit, "MainPID", "ActiveState")
    assert main["ActiveState"] == "active" and main["MainPID"] != before, main

    def pool():
        children = host.exec("ps", "--no-headers", "-o", "pid", "--ppid", main["MainPID"], check=False).stdout.split()
        return children if len(children) == 8 else None

    assert host.wait_for("8 pool processes", pool, timeout=90)
    assert deployment.healthcheck("render") == {"render": f"render@{HOSTNAME}"}


def test_the_documented_security_check_scores_each_unit_low(deployment):
    """systemd-analyze security, live and offline, as the docs run it."""
    out = deployment.documented("security", timeout=300).stdout
    scores = [float(score) for score in re.findall(r"Overall exposure level for \S+: (\d+\.\d+)", out)]
    assert len(scores) == 3, out[-3000:]
    assert max(scores) <= 2.0, out[-3000:]
