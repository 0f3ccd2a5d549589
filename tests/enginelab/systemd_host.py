"""A Debian host with systemd as PID 1, in a container, for the generated units.

`image()` builds standins/systemd-host/ FROM `images.base_image()`: systemd,
redis-server and PostgreSQL (started by their own Debian units, as on a single
host), uv from PyPI's wheel, and Python 3.12 installed the way `make
altinstall` leaves it. Trixie ships 3.13 and uv's own Python downloads are out
of reach here, so the 3.12 is this machine's own build (the one a rendered
project's `.python-version` asks for), copied to /usr/local. Cached by a hash of
its inputs, stored in the image label `images.LABEL`, as the stand-ins are.

`SystemdHost` runs it with exactly the options systemd needs as PID 1 on this
engine (cgroup v1, cgroupfs; `--privileged` fails to apply its caps here) and
talks to it only through `docker exec` and `docker cp`.
"""

from __future__ import annotations

import io
import re
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from helpers import CACHE

from . import images
from .engine import docker

RECIPE = "systemd-host"
UV_VERSION = "0.13"
PYTHON = "python3.12"
# systemd as PID 1 without --privileged (verified on this engine). SYS_PTRACE is
# for the tests, not systemd: root of a real host may enter a service's mount
# namespace (nsenter) and read its /proc/<pid>/ns, which needs ptrace access to
# a process of another user; Docker drops that capability by default.
RUN_OPTIONS = [
    "--cap-add", "SYS_ADMIN", "--cap-add", "SYS_PTRACE",
    "--security-opt", "seccomp=unconfined",
    "--security-opt", "apparmor=unconfined",
    "--volume", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
]  # fmt: skip


def _python_prefix() -> tuple[Path, str]:
    """This machine's CPython 3.12 (pyenv's, or an altinstall): its prefix and version string."""
    candidates = [*sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python3.12")), Path("/usr/local/bin/python3.12")]
    python = next((str(path) for path in candidates if path.exists()), PYTHON)
    proc = subprocess.run(
        [python, "-c", "import sys, sysconfig; print(sys.base_prefix); print(sys.version); "
         "print(sysconfig.get_config_var('Py_ENABLE_SHARED'))"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if proc.returncode != 0:
        raise AssertionError(f"{PYTHON} is needed for the systemd host image: {proc.stderr[-500:]}")
    prefix, version, _ = proc.stdout.splitlines()
    return Path(prefix), version


def _python_tar(prefix: Path, target: Path) -> None:
    """The prefix as `make altinstall` lays it out under /usr/local: bin/python3.12
    only (no python3 to shadow Debian's), the standard library without its tests,
    an empty site-packages."""
    skip = re.compile(r"^lib/python3\.12/(test|idlelib|tkinter|turtledemo|site-packages)/|/__pycache__/")

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        name = info.name
        if name.startswith("bin/") and name != f"bin/{PYTHON}":
            return None
        if skip.search(name + "/"):
            return None
        return info

    with tarfile.open(target, "w") as tar:
        for part in ("bin", "lib", "include"):
            tar.add(prefix / part, arcname=part, filter=keep)
        site = tarfile.TarInfo("lib/python3.12/site-packages")
        site.type, site.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(site)


def image(suite: str = "trixie") -> str:
    """The systemd host image's tag, built once per set of inputs."""
    base = images.base_image(suite)
    files = images._recipe_files(RECIPE)
    prefix, version = _python_prefix()
    inputs = images._digest(
        "systemd-host-v1", base, UV_VERSION, str(prefix), version,
        *(f"{p.relative_to(images.STANDINS)}\0{p.read_text()}" for p in files),
    )  # fmt: skip
    tag = f"cdc-systemd-host/{suite}:{inputs}"
    with FileLock(str(CACHE / f"image-{RECIPE}.lock")):
        if images._image_label(tag) == inputs:
            return tag
        with tempfile.TemporaryDirectory(prefix=f"{RECIPE}-", dir=CACHE) as tmp:
            context = Path(tmp)
            for path in files:
                shutil.copy2(path, context / path.relative_to(images.STANDINS / RECIPE))
            images._uv_binaries(UV_VERSION, context)
            _python_tar(prefix, context / "python.tar")
            docker(
                "build", "--quiet", "--build-arg", f"BASE={base}",
                "--label", f"{images.LABEL}={inputs}", "--tag", tag, str(context),
                timeout=1800,
            )  # fmt: skip
    return tag


@dataclass
class SystemdHost:
    """One running container with systemd as PID 1."""

    name: str
    hostname: str

    @classmethod
    def start(cls, tag: str, hostname: str = "sdhost") -> SystemdHost:
        name = f"cdc-systemd-{secrets.token_hex(4)}"
        docker("run", "--detach", "--name", name, "--hostname", hostname, *RUN_OPTIONS, tag, "/lib/systemd/systemd")
        host = cls(name, hostname)
        try:
            host.wait_booted()
        except BaseException:
            host.remove()
            raise
        return host

    def remove(self) -> None:
        docker("rm", "--force", "--volumes", self.name, check=False, timeout=120)

    def exec(
        self, *argv: str, check: bool = True, timeout: float = 600, input: str | None = None, user: str | None = None
    ) -> subprocess.CompletedProcess:
        options = ["--interactive"] if input is not None else []
        if user:
            options += ["--user", user]
        return docker("exec", *options, self.name, *argv, check=check, timeout=timeout, input=input)

    def sh(self, script: str, **kwargs) -> subprocess.CompletedProcess:
        return self.exec("bash", "-euo", "pipefail", "-c", script, **kwargs)

    def wait_booted(self, timeout: float = 120) -> str:
        """systemd up and `running` (not `degraded`), bounded; else the failed units."""
        deadline = time.monotonic() + timeout
        state = ""
        for _ in range(int(timeout * 2)):
            # Right after `docker run` systemctl may not reach PID 1 yet: empty output.
            left = max(1, int(deadline - time.monotonic()))
            proc = self.exec("timeout", str(left), "systemctl", "is-system-running", "--wait",
                             check=False, timeout=left + 30)  # fmt: skip
            state = proc.stdout.strip()
            if state not in ("", "initializing", "starting") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if state != "running":
            failed = self.exec("systemctl", "--failed", "--no-pager", "--plain", check=False).stdout
            raise AssertionError(f"systemd is {state!r}, not running:\n{failed}")
        return state

    def copy_tree(self, source: Path, destination: str, *, ignore=("__pycache__", ".env")) -> None:
        """`source` as `destination` in the container, owned by root (a checkout)."""
        buffer = io.BytesIO()

        def owned(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
            if any(part in ignore for part in Path(info.name).parts):
                return None
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            return info

        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(source, arcname=Path(destination).name, filter=owned)
        parent = str(Path(destination).parent)
        self.exec("mkdir", "-p", parent)
        proc = subprocess.run(["docker", "cp", "-", f"{self.name}:{parent}"], input=buffer.getvalue(),
                              capture_output=True, timeout=300)  # fmt: skip
        if proc.returncode != 0:
            raise AssertionError(f"docker cp into {self.name}: {proc.stderr.decode()[-2000:]}")

    def write(self, path: str, text: str, mode: str = "0644", owner: str = "root:root") -> None:
        self.exec("sh", "-c", f'umask 077; cat > "$1" && chown {owner} "$1" && chmod {mode} "$1"', "sh", path,
                  input=text)  # fmt: skip

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        out = self.exec("systemctl", "show", unit, *(f"--property={p}" for p in properties)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, *units: str, lines: int = 80) -> str:
        argv = ["journalctl", "--no-pager", "-n", str(lines)]
        for unit in units:
            argv += ["-u", unit]
        return self.exec(*argv, check=False).stdout

    def wait_for(self, what: str, predicate, *, timeout: float, interval: float = 0.5):
        """Poll `predicate()` until it returns something truthy; bounded in time and count."""
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / interval) + 1):
            result = predicate()
            if result:
                return result
            if time.monotonic() > deadline:
                break
            time.sleep(interval)
        raise AssertionError(f"{self.name}: no {what} within {timeout} s")
