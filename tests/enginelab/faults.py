"""A rendered project with the fault tests' `faultlab` app, booted under
`docker compose`, for tests/test_engine_faults.py.

The project is a copy of a render with small time limits; faultlab is copied
into it before the build (the Dockerfile's `COPY . .` takes it into the image).
compose.yaml stays as rendered: an override file of the test's own selects
faultlab's settings and a short TASK_MAX_COUNTDOWN in the app services, tags
the image with a name of its own (every default render names it
my_project:latest) and unpublishes web's fixed host port, so these stacks run
beside tests/test_engine_compose.py's.
"""

from __future__ import annotations

import json
import subprocess
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .compose import Compose

OVERRIDE = "compose.faults.yaml"


def override(image: str, app_services: list[str], environment: dict[str, str]) -> str:
    """The override file's text. YAML by hand: Compose's `!reset` tag is not PyYAML's."""
    lines = ["services:"]
    for service in app_services:
        lines += [f"  {service}:", f"    image: {image}", "    environment:"]
        lines += [f"      {key}: {json.dumps(value)}" for key, value in environment.items()]
        if service == "web":
            lines.append("    ports: !reset []")
    return "\n".join(lines) + "\n"


@dataclass
class FaultStack(Compose):
    """`docker compose -f compose.yaml -f <override>` of one project."""

    files: list[str] = field(default_factory=lambda: ["compose.yaml", OVERRIDE])
    broker: str = ""

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        files = [arg for name in self.files for arg in ("-f", name)]
        return super().run(*files, *args, timeout=timeout, check=check)

    def popen(self, *args: str, **kwargs) -> subprocess.Popen:
        files = [arg for name in self.files for arg in ("-f", name)]
        argv = ["docker", "compose", "-p", self.name, *files, *args]
        return subprocess.Popen(argv, cwd=self.project, **kwargs)

    @property
    def network(self) -> str:
        return f"{self.name}_default"

    def address(self, service: str) -> str:
        """The container's address on the project network (the host reaches it directly)."""
        return self.inspect(self.container(service))["NetworkSettings"]["Networks"][self.network]["IPAddress"]

    def state(self, service: str) -> dict:
        info = self.inspect(self.container(service))
        return {**info["State"], "RestartCount": info["RestartCount"]}

    def main_pid(self, service: str) -> int:
        """The host pid of the container's main command: docker-init's child (`init: true`), or PID 1."""
        init = self.state(service)["Pid"]
        if Path(f"/proc/{init}/comm").read_text().strip() != "docker-init":
            return init
        path = Path(f"/proc/{init}/task/{init}/children")
        children = [int(pid) for pid in path.read_text().split()] if path.exists() else []
        assert len(children) == 1, f"{service}: docker-init (pid {init}) has children {children}"
        return children[0]


def on_each(stacks: dict, fault) -> None:
    """Run `fault(stack)` on every stack at once (they share nothing); raise what any raised."""
    with ThreadPoolExecutor(len(stacks)) as pool:
        futures = {name: pool.submit(fault, stack) for name, stack in stacks.items()}
    failures = []
    for name, future in futures.items():
        error = future.exception()
        if error is not None:
            failures.append(f"[{name}]\n" + "".join(traceback.format_exception(error)))
    if failures:
        raise AssertionError("\n".join(failures))


REPORT_LOCK = threading.Lock()
