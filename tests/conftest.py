import os
from pathlib import Path

import pytest
from network import netns_available

from helpers import CACHE, IN_CI, answers_key, project_venv, render

# Keep a developer's own copier settings out of the tests.
_settings = CACHE / "copier-settings.yml"
_settings.parent.mkdir(exist_ok=True)
_settings.write_text("{}\n")
os.environ["COPIER_SETTINGS_PATH"] = str(_settings)

_skipped_boot_tests: list[str] = []


def pytest_configure(config):
    config.addinivalue_line("markers", "boot: starts processes of a generated project against real services")


def pytest_runtest_logreport(report):
    if report.skipped and "boot" in report.keywords:
        _skipped_boot_tests.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    """In CI a skipped boot test is a failure: it means a service is missing."""
    if IN_CI and _skipped_boot_tests and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if IN_CI and _skipped_boot_tests:
        terminalreporter.write_line(
            f"FAILED: {len(_skipped_boot_tests)} boot test(s) skipped in CI: " + ", ".join(_skipped_boot_tests),
            red=True,
        )


@pytest.fixture
def namespaces():
    """Skip where Linux namespaces cannot be made (not root); fail in CI."""
    reason = netns_available()
    if reason:
        if IN_CI:
            pytest.fail(f"namespaces are unavailable; CI must allow them: {reason}", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def venv() -> Path:
    """The shared virtualenv generated projects run in."""
    return project_venv()


@pytest.fixture(scope="session")
def rendered(tmp_path_factory):
    """rendered(answers) -> a project rendered with those answers, once per session.

    Tests must treat it as read-only; copy it (shutil.copytree) to change it.
    """
    cache: dict[str, Path] = {}

    def _render(answers: dict) -> Path:
        key = answers_key(answers)
        if key not in cache:
            cache[key] = render(tmp_path_factory.mktemp(f"project-{key}") / "project", answers)
        return cache[key]

    return _render
