#!/usr/bin/env python3
"""Audit the generated projects' dependencies for known vulnerabilities.

Renders two variants that between them pull in every optional dependency,
pins the union of their [project].dependencies with `uv pip compile` (the
versions a `uv lock` would pick today), and runs pip-audit on the pins
against the PyPI advisory service, then against OSV. Prints a Markdown
summary for docs/reliability.md.

    uv run python scripts/audit_dependencies.py

Needs the network: PyPI's index, and PyPI's JSON API or api.osv.dev for the
advisories. CI does not run it: an outside service being down must not fail
a build. Exit codes: 0 audited, nothing known; 1 vulnerabilities found;
2 could not audit (services unreachable, or packages skipped).
"""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import copier

ROOT = Path(__file__).resolve().parent.parent
# Between them: every broker, result backend and optional dependency.
VARIANTS = {
    "defaults": {},
    "rabbitmq-redis-sentry": {"broker": "rabbitmq", "result_backend": "redis", "use_sentry": True},
}
PIP_AUDIT = "pip-audit>=2.10,<3"
SERVICES = ("pypi", "osv")


def uv() -> str:
    found = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    if not Path(found).exists() and not shutil.which(found):
        sys.exit("uv is required: https://docs.astral.sh/uv/")
    return found


def dependencies(workdir: Path) -> list[str]:
    wanted: set[str] = set()
    for name, answers in VARIANTS.items():
        project = workdir / name
        copier.run_copy(str(ROOT), str(project), data=answers, defaults=True, unsafe=True, quiet=True)
        pyproject = tomllib.loads((project / "pyproject.toml").read_text())
        wanted.update(pyproject["project"]["dependencies"])
    return sorted(wanted)


def pin(requirements: list[str], workdir: Path) -> Path:
    source, pinned = workdir / "requirements.in", workdir / "requirements.txt"
    source.write_text("\n".join(requirements) + "\n")
    subprocess.run(
        [uv(), "pip", "compile", "--quiet", "--python-version", "3.12", str(source), "-o", str(pinned)],
        check=True,
    )
    return pinned


def audit(pinned: Path, service: str) -> dict:
    """pip-audit's JSON report, or {"error": ...} when it could not run."""
    command = [uv(), "tool", "run", "--quiet", "--from", PIP_AUDIT, "pip-audit", "--requirement", str(pinned)]
    command += ["--no-deps", "--disable-pip", "--vulnerability-service", service]
    command += ["--format", "json", "--progress-spinner", "off"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]}


def summarize(report: dict) -> tuple[int, list[str], list[str]]:
    """Packages audited, vulnerabilities (one line each), packages skipped (with why)."""
    audited, found, skipped = 0, [], []
    for dep in report.get("dependencies", []):
        if "skip_reason" in dep:
            skipped.append(f"{dep['name']}: {dep['skip_reason']}")
            continue
        audited += 1
        for vuln in dep.get("vulns", []):
            fixed = ", ".join(vuln.get("fix_versions", [])) or "no fix yet"
            found.append(f"{dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixed})")
    return audited, found, skipped


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="cdc-audit-") as tmp:
        workdir = Path(tmp)
        requirements = dependencies(workdir)
        pinned = pin(requirements, workdir)
        pins = [line for line in pinned.read_text().splitlines() if line and not line.startswith((" ", "#"))]
        print(f"## Dependency audit, {datetime.date.today().isoformat()}\n")
        print(f"{len(requirements)} direct requirements, {len(pins)} pinned packages (uv pip compile).\n")
        outcome = 2
        for service in SERVICES:
            report = audit(pinned, service)
            if "error" in report:
                print(f"- pip-audit, {service}: could not run: {report['error']}")
                continue
            audited, found, skipped = summarize(report)
            print(
                f"- pip-audit, {service}: {audited} of {len(pins)} packages audited, {len(found)} known vulnerabilities"
            )
            for line in found:
                print(f"  - {line}")
            if skipped:
                print(f"  - {len(skipped)} skipped, e.g. {skipped[0]}")
            if audited == len(pins):
                outcome = 1 if found else 0
                break
        if outcome == 2:
            print("\nNot audited: no advisory service answered for every package.")
        return outcome


if __name__ == "__main__":
    sys.exit(main())
