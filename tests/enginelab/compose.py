"""One rendered project under `docker compose`, as its docs run it.

The project is a copy of a render with its generated `.env`; nothing in it is
edited. Every command runs in the project directory with a project name of
the test's own (`-p`), so its containers, network and volumes are easy to find
and all removed afterwards (`down --volumes`).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .engine import docker


@dataclass
class Compose:
    project: Path
    name: str

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        env = {key: value for key, value in os.environ.items() if not key.startswith("COMPOSE_")}
        return docker("compose", "-p", self.name, *args, timeout=timeout, check=check, env=env, cwd=self.project)

    # -- state -------------------------------------------------------------------------

    def ps(self, all: bool = True) -> list[dict]:
        """One dict per container (`docker compose ps --format json`)."""
        out = self.run("ps", *(["-a"] if all else []), "--format", "json").stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        return [row for item in rows for row in (item if isinstance(item, list) else [item])]

    def containers(self, service: str) -> list[str]:
        out = self.run("ps", "-a", "-q", service).stdout
        return [line for line in out.split() if line]

    def container(self, service: str) -> str:
        ids = self.containers(service)
        assert len(ids) == 1, f"{service}: {len(ids)} containers"
        return ids[0]

    def inspect(self, container: str) -> dict:
        return json.loads(docker("inspect", container).stdout)[0]

    def health(self, service: str) -> str:
        state = self.inspect(self.container(service))["State"]
        return (state.get("Health") or {}).get("Status", state["Status"])

    def services(self) -> list[str]:
        return self.run("config", "--services").stdout.split()

    def config(self) -> dict:
        return json.loads(self.run("config", "--format", "json").stdout)

    # -- actions -----------------------------------------------------------------------

    def exec(self, service: str, *argv: str, timeout: float = 180, check: bool = True, user: str | None = None):
        args = ["exec", "-T", *(["--user", user] if user else []), service, *argv]
        return self.run(*args, timeout=timeout, check=check)

    def manage(self, *args: str, timeout: float = 180, check: bool = True, service: str = "web"):
        return self.exec(service, "python", "manage.py", *args, timeout=timeout, check=check)

    def logs(self, service: str) -> str:
        proc = self.run("logs", "--no-color", "--no-log-prefix", service, check=False)
        return proc.stdout + proc.stderr

    def wait_for(self, predicate, timeout: float, interval: float = 1.0, what: str = "condition"):
        """Poll `predicate()` until it returns something truthy; bounded in time."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no {what} after {timeout} s")
            time.sleep(interval)

    def wait_for_log(self, service: str, pattern: str, timeout: float = 60) -> str:
        import re

        regex = re.compile(pattern)
        return self.wait_for(lambda: regex.search(self.logs(service)), timeout, what=f"/{pattern}/ in {service}'s log")

    def down(self) -> None:
        self.run("down", "--volumes", "--remove-orphans", "--timeout", "10", check=False, timeout=300)

    def describe(self) -> str:
        """What to print when a test fails: every container's state and its log's tail."""
        lines = []
        for row in self.ps():
            lines.append(f"{row.get('Service')}: {row.get('State')} {row.get('Health', '')} exit {row.get('ExitCode')}")
        for service in self.services():
            lines.append(f"--- {service}\n{self.logs(service)[-1500:]}")
        return "\n".join(lines)
