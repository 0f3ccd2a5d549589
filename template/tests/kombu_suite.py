"""kombu's own Redis integration tests, run against ops/transport.py.

ops/transport.py subclasses kombu's Redis transport, internals included, so a
kombu release can break it without an error of its own. This script takes the
tests kombu ships in the sdist of the installed version (t/integration/
test_redis*.py), registers ops/transport.py for redis:// by importing
config/celery.py, runs them, and fails unless exactly EXPECTED_FAILURES fail,
each for its documented reason.

    REDIS_HOST=localhost REDIS_6379_TCP=6379 uv run python tests/kombu_suite.py

kombu's tests take no database number (they use database 0) and fixed queue
names: point them at a Redis of their own, never at one in use. The sdist comes
from the package index (`uvx pip download`); set KOMBU_SDIST_DIR to keep it
between runs, and KOMBU_SUITE_JUNIT to keep pytest's junit report. The
generated CI runs this script, as does the weekly template update after it
re-locks the dependencies.
"""

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from importlib.metadata import version
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
PRIORITY = "Message priorities are not supported"

# kombu emulates priorities with a list per priority; ops/transport.py waits on
# one list with BLMOVE, so it refuses a message sent with a priority.
EXPECTED_FAILURES = {
    "test_redis.test_RedisPriority.test_publish_consume": PRIORITY,
    "test_redis.test_RedisPriority.test_publish_requeue_consume": PRIORITY,
    "test_redis.test_RedisPriority.test_simple_queue_publish_consume": PRIORITY,
    "test_redis.test_RedisPriority.test_simple_buffer_publish_consume": PRIORITY,
    "test_redis.test_RedisPublishBatch.test_direct_priority_and_fifo": PRIORITY,
    "test_redis.test_RedisQueueExpiration.test_queue_expires_for_all_priorities": PRIORITY,
}

CONFTEST = """\
from kombu.transport import get_transport_cls

import config.celery  # noqa: F401  (registers ops/transport.py for redis://)
from ops.transport import Transport

assert get_transport_cls("redis") is Transport, "config/celery.py must register ops/transport.py"


def pytest_configure(config):
    # Markers of kombu's own conftest and of pytest-rerunfailures, neither in the sdist.
    config.addinivalue_line("markers", "env(name): the service a test needs")
    config.addinivalue_line("markers", "flaky(reruns, reruns_delay): rerun on failure")
"""


def sdist(kombu_version: str, directory: Path) -> Path:
    """The sdist of this kombu version, downloaded from the package index once."""
    path = directory / f"kombu-{kombu_version}.tar.gz"
    if not path.exists():
        uvx = shutil.which("uvx") or sys.exit("uvx (uv) is needed to download kombu's sdist")
        command = [uvx, "pip", "download", "--no-deps", "--no-binary", ":all:"]
        command += [f"kombu=={kombu_version}", "--dest", str(directory)]
        subprocess.run(command, check=True)  # noqa: S603  (a fixed command line)
    return path


def extract(archive: Path, destination: Path) -> None:
    """kombu's test package without its unit tests, and its pytest configuration."""
    with tarfile.open(archive) as tar:
        root = tar.getnames()[0].split("/")[0]
        wanted = []
        for member in tar.getmembers():
            name = member.name.removeprefix(f"{root}/")
            if (name.startswith("t/") and not name.startswith("t/unit/")) or name == "setup.cfg":
                member.name = name
                wanted.append(member)
        tar.extractall(destination, members=wanted, filter="data")


def outcomes(junit: Path) -> dict[str, list[tuple[str, str]]]:
    """{test name without its parameters: [(outcome, message), ...]} from a junit report."""
    results: dict[str, list[tuple[str, str]]] = {}
    for case in ET.parse(junit).iter("testcase"):  # noqa: S314  (the report pytest just wrote)
        classname = case.get("classname", "").removeprefix("t.integration.")
        name = f"{classname}.{case.get('name', '').split('[')[0]}"
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            if (element := case.find(tag)) is not None:
                outcome, message = tag, element.get("message", "")
                break
        results.setdefault(name, []).append((outcome, message))
    return results


def verdict(results: dict[str, list[tuple[str, str]]]) -> list[str]:
    """What differs from the expectation: an empty list when all is as documented."""
    problems = []
    for name, runs in sorted(results.items()):
        expected = EXPECTED_FAILURES.get(name)
        for outcome, message in runs:
            if expected is None and outcome != "passed":
                problems.append(f"{name}: {outcome}: {message[:300]}")
            elif expected is not None and (outcome != "failure" or expected not in message):
                problems.append(f"{name}: expected {expected!r}, got {outcome}: {message[:300]}")
    for name in EXPECTED_FAILURES.keys() - results:
        problems.append(f"{name}: expected to fail, but did not run")
    return problems


def main() -> int:
    kombu_version = version("kombu")
    with tempfile.TemporaryDirectory(prefix="kombu-suite-") as scratch:
        work = Path(scratch)
        downloads = Path(os.environ.get("KOMBU_SDIST_DIR") or work)
        downloads.mkdir(parents=True, exist_ok=True)
        extract(sdist(kombu_version, downloads), work)
        (work / "conftest.py").write_text(CONFTEST)
        junit = Path(os.environ.get("KOMBU_SUITE_JUNIT") or work / "junit.xml")
        found = work.glob("t/integration/test_redis*.py")
        tests = sorted(str(path.relative_to(work)) for path in found)
        if not tests:
            print(f"kombu {kombu_version}'s sdist has no t/integration/test_redis*.py")
            return 1
        env = {**os.environ, "PYTHONPATH": str(PROJECT)}
        command = [sys.executable, "-m", "pytest", "-p", "no:django", "-p", "no:cacheprovider"]
        command += ["-q", "-rfE", f"--junitxml={junit}", *tests]
        subprocess.run(command, cwd=work, env=env, check=False)  # noqa: S603  (a fixed command line)
        if not junit.exists():
            print("pytest wrote no report: see its output above")
            return 1
        results = outcomes(junit)
    runs = [outcome for name_runs in results.values() for outcome, _ in name_runs]
    problems = verdict(results)
    print(
        f"kombu {kombu_version}'s Redis integration tests against ops/transport.py: "
        f"{runs.count('passed')} passed, {len(runs) - runs.count('passed')} failed or skipped, "
        f"{len(problems)} not as expected"
    )
    for problem in problems:
        print(f"  {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
