"""The generated image, measured: its size, a cold build, and a warm rebuild
after a one-line change in a Python file, side by side in one run.

    .venv/bin/python benchmarks/image.py [--rounds 3] [--keep-cache]

Renders the defaults, runs `uv lock`, builds the stand-in base images
(tests/enginelab: no registry here), then per round:
- cold: `docker builder prune --all --force` (every BuildKit cache, uv's cache
  mount included), then `docker build`;
- warm: append a comment to reports/views.py, `docker build` again.
Prints the figures and whether the warm build reused the dependency layer
(BuildKit reports the `uv sync` step CACHED). Needs a Docker Engine
(`bash .ci/engine-up`). Clears the engine's build cache unless --keep-cache
(then "cold" only means no layer cache for this project). Asserts nothing.
See docs/deploy-compose.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from enginelab import images  # noqa: E402
from enginelab.engine import docker, engine_problem  # noqa: E402

from helpers import render  # noqa: E402

TAG = "cdc-bench-image:latest"


def build(project: Path, no_cache: bool = False) -> tuple[float, str]:
    started = time.perf_counter()
    options = ["--no-cache"] if no_cache else []
    proc = docker("build", *options, "--progress", "plain", "--tag", TAG, ".", cwd=project, timeout=1800,
                  env={**os.environ, "DOCKER_BUILDKIT": "1"})  # fmt: skip
    return time.perf_counter() - started, proc.stderr


def dependency_step_cached(output: str) -> bool:
    steps = dict(re.findall(r"^#(\d+) \[build \d+/\d+\] (.*)$", output, re.M)[::-1])
    number = next(n for n, step in steps.items() if "uv sync" in step)
    return bool(re.search(rf"^#{number} CACHED$", output, re.M))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep-cache", action="store_true")
    args = parser.parse_args()
    if problem := engine_problem():
        sys.exit(f"no Docker Engine: {problem}; run `bash .ci/engine-up`")
    with tempfile.TemporaryDirectory(prefix="bench-image-") as tmp:
        project = render(Path(tmp) / "project", {})
        uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
        subprocess.run([uv, "lock", "--quiet"], cwd=project, check=True)
        images.standins_for(project)
        cold, warm, reused = [], [], []
        for _ in range(args.rounds):
            if args.keep_cache:
                docker("image", "rm", "--force", TAG, check=False)
                seconds, _ = build(project, no_cache=True)
            else:
                docker("builder", "prune", "--all", "--force", timeout=600)
                seconds, _ = build(project)
            cold.append(seconds)
            views = project / "reports" / "views.py"
            views.write_text(views.read_text() + f"# a one-line change {uuid.uuid4().hex}\n")
            seconds, output = build(project)
            warm.append(seconds)
            reused.append(dependency_step_cached(output))
        size = json.loads(docker("image", "inspect", TAG).stdout)[0]["Size"]
        base_reference = next(ref for ref in images.image_references(project) if ref.startswith("python:"))
        base = json.loads(docker("image", "inspect", base_reference).stdout)[0]["Size"]
        layers = docker("history", "--format", "{{.Size}}\t{{.CreatedBy}}", TAG).stdout.splitlines()
        # Newest first: what a code change adds on top of the reused virtualenv layer.
        venv_at = next(i for i, line in enumerate(layers) if "/opt/venv /opt/venv" in line)
        venv_layer = _bytes(layers[venv_at].split("\t")[0])
        code_layers = sum(_bytes(line.split("\t")[0]) for line in layers[:venv_at])
        docker("image", "rm", "--force", TAG, check=False)
    engine = docker("version", "--format", "{{.Server.Version}}").stdout.strip()
    print(f"Docker Engine {engine}; defaults render; {args.rounds} rounds")
    print("| figure | value |")
    print("|---|---|")
    print(f"| image size | {size / 1e6:.0f} MB |")
    print(
        f"| of which the project's own layers (the virtualenv, the code, static files) | {(size - base) / 1e6:.0f} MB |"
    )
    print(f"| of which the base image ({base_reference}, a local stand-in here) | {base / 1e6:.0f} MB |")
    print(f"| the virtualenv's layer, reused while uv.lock is unchanged | {venv_layer / 1e6:.0f} MB |")
    print(f"| the layers a code change adds (code, static files) | {code_layers / 1e6:.1f} MB |")
    print(f"| cold build, median | {statistics.median(cold):.1f} s (rounds: {', '.join(f'{s:.1f}' for s in cold)}) |")
    print(
        f"| warm rebuild after a one-line change, median | {statistics.median(warm):.1f} s "
        f"(rounds: {', '.join(f'{s:.1f}' for s in warm)}) |"
    )
    print(f"| warm / cold | {statistics.median(warm) / statistics.median(cold):.2f} |")
    print(f"| dependency layer reused on the warm rebuild | {sum(reused)} of {len(reused)} rounds |")
    print("\nLargest layers:")
    for line in sorted(layers, key=lambda row: -_bytes(row.split("\t")[0]))[:5]:
        size_text, created = line.split("\t", 1)
        print(f"  {size_text:>8}  {created[:100]}")


def _bytes(text: str) -> float:
    match = re.match(r"([\d.]+)\s*([kMG]?B)", text)
    if not match:
        return 0.0
    return float(match.group(1)) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[match.group(2)]


if __name__ == "__main__":
    main()
