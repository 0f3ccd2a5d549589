"""The Docker Engine: is it there, and a `docker` runner that explains failures."""

from __future__ import annotations

import functools
import shlex
import subprocess

from helpers import IN_CI


@functools.cache
def engine_problem() -> str | None:
    """None when `docker info` answers and Compose v2 and buildx are installed."""
    for argv in (
        ["docker", "info", "--format", "{{.ServerVersion}}"],
        ["docker", "compose", "version"],
        ["docker", "buildx", "version"],
    ):
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"{shlex.join(argv)}: {error}"
        if proc.returncode != 0:
            return f"{shlex.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-400:]}"
    return None


def require_engine() -> None:
    """Skip without a Docker Engine on a developer machine; fail in CI."""
    import pytest

    problem = engine_problem()
    if problem is None:
        return
    message = f"no Docker Engine ({problem}); start one with `bash .ci/engine-up`"
    if IN_CI:
        pytest.fail(f"{message}; CI must provide it", pytrace=False)
    pytest.skip(message)


def docker(
    *args: str, timeout: float = 600, check: bool = True, input: str | None = None, env: dict | None = None, cwd=None
) -> subprocess.CompletedProcess:
    argv = ["docker", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input, env=env, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{shlex.join(argv)} exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc
