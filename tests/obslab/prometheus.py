"""A private Prometheus (Debian's `prometheus` package) for one test.

It scrapes the given targets every second, keeps its data in a temporary
directory and listens on a free loopback port; `query` reads its HTTP API.
https://prometheus.io/docs/prometheus/latest/querying/api/
"""

import contextlib
import json
import shutil
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from helpers import IN_CI, Service, free_port, start, wait_until


class Prometheus:
    def __init__(self, service: Service, port: int):
        self.service, self.port = service, port

    def api(self, path: str, **params) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback)
            reply = json.load(response)
        assert reply["status"] == "success", reply
        return reply["data"]

    def query(self, expression: str) -> dict[tuple, float]:
        """An instant query: {label values (sorted by name): value}."""
        result = self.api("query", query=expression)["result"]
        return {tuple(v for _, v in sorted(r["metric"].items())): float(r["value"][1]) for r in result}

    def value(self, expression: str) -> float | None:
        """The one value of a scalar-like query, or None when it has no result."""
        found = self.query(expression)
        assert len(found) <= 1, found
        return next(iter(found.values()), None)

    def targets_up(self) -> dict[str, str]:
        return {t["scrapePool"] + " " + t["scrapeUrl"]: t["health"] for t in self.api("targets")["activeTargets"]}

    def scrape_errors(self) -> dict[str, str]:
        """The last error of each target that has one."""
        return {t["scrapeUrl"]: t["lastError"] for t in self.api("targets")["activeTargets"] if t["lastError"]}

    def scrape_once_more(self) -> None:
        """Wait two scrape intervals, so that the latest figures are in."""
        time.sleep(2.5)


@contextlib.contextmanager
def prometheus(jobs: dict[str, list[str]], workdir: Path, ready: list[str] | None = None):
    """Prometheus scraping `jobs` ({job: ["host:port", ...]}) every second; it is
    handed over once the targets of the `ready` jobs (all by default) are up."""
    binary = shutil.which("prometheus")
    if binary is None:
        import pytest

        if IN_CI:
            pytest.fail("Debian's prometheus package is needed (.ci/apt-packages)", pytrace=False)
        pytest.skip("prometheus is not installed")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": targets}]} for job, targets in jobs.items()
        ],
    }
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    service = start(
        "prometheus",
        [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        workdir,
        {"PATH": "/usr/bin:/bin"},
        workdir,
    )
    server = Prometheus(service, port)
    try:
        service.wait_for_log("Server is ready to receive web requests", timeout=60)

        def up():
            health = server.targets_up()
            return all(
                health.get(f"{job} http://{target}/metrics") == "up" for job in ready or jobs for target in jobs[job]
            )

        assert wait_until(up, timeout=60), server.targets_up()
        yield server
    finally:
        service.kill()
