"""Reading generated deployment files: the `queues` answer, and compose.yaml
the way Docker Compose does.

No compose engine runs here, so the tests resolve the file themselves: the
`.env` file, `${...}` interpolation, healthcheck forms and durations follow the
Compose specification (https://github.com/compose-spec/compose-spec/blob/main/spec.md);
a form this module does not know raises instead of passing silently.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

# ${NAME}, ${NAME:?message}, ${NAME?message}, ${NAME:-default}, ${NAME-default}, $NAME, and $$.
_TOKEN = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:\?|\?|:-|-)(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<invalid>))"
)


class InterpolationError(KeyError):
    pass


def queues_of(spec: str) -> list[dict]:
    """The `queues` answer as {"name", "concurrency", "pool", "prefetch"} dicts,
    parsed independently of the template's macro."""
    result = []
    for item in spec.split(","):
        name, *rest = [part.strip() for part in item.strip().split(":")]
        rest += [""] * (3 - len(rest))
        result.append(
            {
                "name": name,
                "concurrency": int(rest[0]) if rest[0] else None,
                "pool": rest[1] or "prefork",
                "prefetch": int(rest[2]) if rest[2] else None,
            }
        )
    return result


def parse_env_text(text: str, comments: str = "#", source: str = "env file") -> dict[str, str]:
    """KEY=VALUE lines; blank lines and lines starting with one of `comments` skipped."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in comments:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{source}: not KEY=VALUE: {line!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an env file; `#` comments and blank lines skipped."""
    return parse_env_text(path.read_text(), source=str(path))


def assert_worker_command(command: list[str], queue: dict) -> None:
    """A worker's exec-form command consumes `queue` with its own options."""
    assert command[:4] == ["celery", "-A", "config", "worker"]
    options = dict(zip(command[4::2], command[5::2], strict=False))
    assert options["-Q"] == queue["name"]
    # %h: celery puts the container's hostname in; unique per replica.
    assert options["-n"] == f"{queue['name']}@%h"
    assert options["-P"] == queue["pool"]
    assert options.get("-c") == (str(queue["concurrency"]) if queue["concurrency"] else None)
    assert options.get("--prefetch-multiplier") == (str(queue["prefetch"]) if queue["prefetch"] else None)


def interpolate(text: str, variables: dict[str, str]) -> str:
    """Compose's interpolation of one string."""

    def replace(match: re.Match) -> str:
        if match["escaped"]:
            return "$"
        if match["invalid"] is not None:
            raise InterpolationError(f"invalid interpolation in {text!r}")
        name = match["braced"] or match["named"]
        op, arg = match["op"], match["arg"]
        value = variables.get(name)
        if op in (":?", "?"):
            if value is None or (op == ":?" and value == ""):
                raise InterpolationError(f"{name} is required: {arg}")
            return value
        if op == ":-":
            return value if value else arg
        if op == "-":
            return arg if value is None else value
        return value or ""

    return _TOKEN.sub(replace, text)


def _interpolate_tree(node, variables):
    if isinstance(node, str):
        return interpolate(node, variables)
    if isinstance(node, list):
        return [_interpolate_tree(item, variables) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, variables) for key, value in node.items()}
    return node


def load(project: Path) -> dict:
    """compose.yaml as YAML (anchors and merge keys resolved), not interpolated."""
    return yaml.safe_load((project / "compose.yaml").read_text())


def resolve(project: Path, variables: dict[str, str] | None = None) -> dict:
    """compose.yaml interpolated as `docker compose` would, from `variables`
    or else from the project's .env file."""
    if variables is None:
        variables = read_env_file(project / ".env")
    return _interpolate_tree(load(project), variables)


def environment(service: dict) -> dict[str, str]:
    """A service's `environment:`, in either of its two forms, as strings."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def container_env(project: Path, service: dict) -> dict[str, str]:
    """What a service's container gets: its env_file(s), then `environment:`."""
    files = service.get("env_file") or []
    if isinstance(files, (str, dict)):
        files = [files]
    values: dict[str, str] = {}
    for item in files:
        path = item["path"] if isinstance(item, dict) else item
        values.update(read_env_file(project / path))
    values.update(environment(service))
    return values


def healthcheck_argv(service: dict) -> list[str]:
    """The healthcheck test as the argv the engine runs."""
    test = service["healthcheck"]["test"]
    if isinstance(test, str):
        return ["/bin/sh", "-c", test]
    kind, *rest = test
    if kind == "CMD":
        return list(rest)
    if kind == "CMD-SHELL":
        (script,) = rest
        return ["/bin/sh", "-c", script]
    raise ValueError(f"healthcheck test of unknown form: {test!r}")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def seconds(duration: str | int) -> float:
    """A compose duration ("1m30s", "330s") in seconds."""
    if isinstance(duration, int):
        return float(duration)
    parts = _DURATION.findall(duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a compose duration: {duration!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def published(service: dict) -> list[tuple[str, str, str]]:
    """(host_ip, host_port, container_port) of each published port."""
    result = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            result.append((port.get("host_ip", ""), str(port.get("published", "")), str(port["target"])))
            continue
        parts = str(port).split(":")
        if len(parts) == 3:
            result.append((parts[0], parts[1], parts[2]))
        elif len(parts) == 2:
            result.append(("", parts[0], parts[1]))
        else:
            result.append(("", "", parts[0]))
    return result
