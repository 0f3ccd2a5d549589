"""kombu's own Redis integration tests against the generated ops/transport.py.

The generated CI runs `tests/kombu_suite.py` in its test job: it downloads the
sdist of the installed kombu from the package index, runs the sdist's
t/integration/test_redis*.py with redis:// registered to ops/transport.py, and
fails unless exactly its documented expected failures fail. Here that CI step
runs as written, in the shared venv, against a private redis-server (kombu's
tests use database 0 and fixed queue names), with the sdist cached in .cache/;
then pytest's junit report is read again here, independently of the script.
"""

import importlib.util
import re
import sys
import tomllib
import xml.etree.ElementTree as ET

import pytest
import yaml

from helpers import CACHE, PROJECT_REQUIREMENTS, PrivateRedis, project_env, run
from variants import MATRIX

VARIANT = MATRIX["redis-redis-sqlite"]


def suite_step(project) -> dict:
    ci = yaml.safe_load((project / ".github/workflows/ci.yml").read_text())
    (step,) = [step for step in ci["jobs"]["test"]["steps"] if "tests/kombu_suite.py" in step.get("run", "")]
    return step


def expected_failures(project) -> dict[str, str]:
    """The generated script's EXPECTED_FAILURES: {test name: text its failure must contain}."""
    spec = importlib.util.spec_from_file_location("kombu_suite", project / "tests/kombu_suite.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EXPECTED_FAILURES


@pytest.mark.boot
@pytest.mark.xdist_group("kombu-suite")
def test_kombus_redis_tests_pass_on_the_transport_but_for_the_documented_failures(rendered, venv, tmp_path):
    project = rendered(VARIANT)
    step = suite_step(project)
    assert step["env"] == {"REDIS_HOST": "127.0.0.1", "REDIS_6379_TCP": "6379"}  # the service container
    junit = tmp_path / "junit.xml"
    redis = PrivateRedis(tmp_path / "redis", appendonly=False).start()
    try:
        env = project_env(
            venv,
            **{**step["env"], "REDIS_6379_TCP": str(redis.port)},
            KOMBU_SDIST_DIR=str(CACHE / "kombu-sdist"),
            KOMBU_SUITE_JUNIT=str(junit),
        )
        env["PATH"] += f":{sys.prefix}/bin"  # uvx, which downloads the sdist, as on GitHub
        script = step["run"].replace("uv run ", "")
        proc = run(["bash", "-eo", "pipefail", "-c", script], project, env, timeout=1200, check=False)
    finally:
        redis.kill()
    output = proc.stdout[-8000:] + proc.stderr[-4000:]

    assert junit.exists(), output
    expected = expected_failures(project)
    outcomes: dict[str, list[tuple[str, str]]] = {}  # by test name without its parameters
    for case in ET.parse(junit).iter("testcase"):
        name = case.get("classname").removeprefix("t.integration.") + "." + case.get("name").split("[")[0]
        problems = [child for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes.setdefault(name, []).append(
            (problems[0].tag, problems[0].get("message")) if problems else ("passed", "")
        )
    failed = {name for name, runs in outcomes.items() if any(outcome != "passed" for outcome, _ in runs)}
    assert failed == set(expected), output
    for name in failed:
        for outcome, message in outcomes[name]:
            assert outcome == "failure" and expected[name] in message, (name, outcome, message)
    passed = sum(outcome == "passed" for runs in outcomes.values() for outcome, _ in runs)
    assert passed >= 100, output  # kombu 5.7.0 has 117 more: the suite was collected, classes included
    assert proc.returncode == 0, output
    version = run([str(venv / "bin/python"), "-c", "import kombu; print(kombu.__version__)"], project, env).stdout
    assert re.search(rf"kombu {re.escape(version.strip())}'s .*: {passed} passed, .* 0 not as expected", proc.stdout)


@pytest.mark.parametrize(
    "name", ["redis-djangodb-postgresql", "redis-redis-postgresql", "rabbitmq-djangodb-postgresql"]
)
def test_the_shared_venv_asks_for_the_generated_pins(rendered, name):
    """One venv serves every variant: it must install what their pyproject.toml pins,
    kombu's minor version included."""
    pyproject = tomllib.loads((rendered(MATRIX[name]) / "pyproject.toml").read_text())
    assert set(pyproject["project"]["dependencies"]) <= set(PROJECT_REQUIREMENTS)
    assert ("kombu[redis]>=5.7,<5.8" in pyproject["project"]["dependencies"]) == name.startswith("redis")
