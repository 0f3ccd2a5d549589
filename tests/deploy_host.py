"""Read the generated systemd units and env files the way systemd does, for the
deploy tests: the boot tests start services from the units' own ExecStart=."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import yaml

from deploy_files import parse_env_text

SYSTEM_UNITS = Path("/usr/lib/systemd/system")


def answers(project: Path) -> dict:
    """The recorded answers, plus the defaults the tests need."""
    recorded = yaml.safe_load((project / ".copier-answers.yml").read_text())
    return {"use_beat": True, "use_flower": True, **recorded}


def slug(project: Path) -> str:
    return answers(project)["project_slug"]


def host_paths(project: Path) -> dict[str, str]:
    """The host paths the units use (includes/macros.jinja `host_paths`), read
    back from the rendered install.sh so the tests follow the template."""
    text = (project / "deploy" / "systemd" / "install.sh").read_text()
    found = dict(re.findall(r"^(APP_DIR|VENV|CONF_DIR|STATE_DIR)=(\S+)", text, re.M))
    return {"app": found["APP_DIR"], "venv": found["VENV"], "conf": found["CONF_DIR"], "state": found["STATE_DIR"]}


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file as lists of (key, value), in order."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    lines = iter(text.splitlines())
    for line in lines:
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        while stripped.endswith("\\"):  # continuation lines
            stripped = stripped[:-1] + " " + next(lines).strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            current = sections.setdefault(stripped[1:-1], [])
            continue
        key, _, value = stripped.partition("=")
        assert current is not None, f"directive outside a section: {line}"
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: dict, section: str, key: str) -> list[str]:
    return [value for name, value in unit.get(section, []) if name == key]


def value(unit: dict, section: str, key: str) -> str | None:
    found = values(unit, section, key)
    return found[-1] if found else None


def parse_env_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines of an EnvironmentFile=; comments start with # or ;."""
    return parse_env_text(text, comments="#;", source="EnvironmentFile")


def expand_specifiers(text: str, specifiers: dict[str, str]) -> str:
    """Replace %X specifiers; an unknown one fails the test (systemd would
    either reject it or mean something else, like %h for the home directory)."""

    def replace(match: re.Match) -> str:
        char = match.group(1)
        if char == "%":
            return "%"
        assert char in specifiers, f"specifier %{char} is not expected in {text!r}"
        return specifiers[char]

    return re.sub(r"%(.)", replace, text)


def command_line(line: str, env: dict[str, str]) -> list[str]:
    """An Exec*= value as argv, after specifier expansion: systemd's quoting,
    "${VAR}" as one word (empty if unset), a lone "$VAR" split on whitespace."""
    line = line.lstrip("-@:+!")
    argv: list[str] = []
    for word in shlex.split(line):
        lone = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if lone:
            argv.extend(env.get(lone.group(1), "").split())
        else:
            argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
    return argv


def unit_files(project: Path) -> dict[str, Path]:
    """Generated units by file name."""
    directory = project / "deploy" / "systemd"
    return {path.name: path for path in sorted(directory.iterdir()) if path.suffix in {".service", ".target"}}


def queue_env_files(project: Path) -> dict[str, Path]:
    return {path.stem: path for path in sorted((project / "deploy" / "systemd" / "queues").glob("*.env"))}


def instances(project: Path) -> dict[str, str]:
    """Every unit to check, by name: the worker template once per queue
    (`name@queue.service`, as install.sh enables it), the others as they are."""
    units = {}
    for name, path in unit_files(project).items():
        text = path.read_text()
        if name.endswith("@.service"):
            for queue in queue_env_files(project):
                units[name.replace("@.service", f"@{queue}.service")] = text
        else:
            units[name] = text
    return units


def build_root(project: Path, root: Path, venv: Path) -> Path:
    """A file system root laid out as install.sh leaves a host, for
    `systemd-analyze verify --root`: systemd's own units, ours in
    /etc/systemd/system, the checkout, its virtualenv's commands, the env
    files, and the host's copy of any other command a unit runs."""
    paths = host_paths(project)
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    for name in ("bin", "sbin", "lib"):
        (root / name).symlink_to(f"usr/{name}")
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    unit_dir = root / "etc/systemd/system"
    unit_dir.mkdir(parents=True)
    for path in unit_files(project).values():
        shutil.copy(path, unit_dir)
    app = root / paths["app"].lstrip("/")
    shutil.copytree(project, app, ignore=shutil.ignore_patterns(".git", "__pycache__"))
    conf = root / paths["conf"].lstrip("/")
    (conf / "queues").mkdir(parents=True)
    shutil.copy(project / "deploy/systemd/app.env.example", conf / "app.env")
    for path in queue_env_files(project).values():
        shutil.copy(path, conf / "queues")
    for text in instances(project).values():
        unit = parse_unit(text)
        for key in ("ExecStart", "ExecReload"):
            for line in values(unit, "Service", key):
                executable = Path(shlex.split(line.lstrip("-@:+!"))[0])
                target = root / str(executable).lstrip("/")
                if target.exists():
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                if str(executable).startswith(paths["venv"] + "/"):
                    shutil.copy(venv / executable.relative_to(paths["venv"]), target)
                else:
                    shutil.copy(executable, target)
    return root


# --- nginx (deploy/nginx) --------------------------------------------------------


def nginx_site(project: Path) -> Path:
    return project / "deploy" / "nginx" / f"{slug(project)}.conf"


def self_signed_certificate(directory: Path, domain: str) -> tuple[Path, Path]:
    """A throwaway certificate for `domain`, standing in for certbot's."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "fullchain.pem", directory / "privkey.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN={domain}", "-addext", f"subjectAltName=DNS:{domain}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def replace_once(text: str, old: str, new: str) -> str:
    """Replace `old`, which must be there: a test root that silently kept a
    production path would prove nothing."""
    assert old in text, f"{old!r} is not in the nginx config"
    return text.replace(old, new)


def nginx_root(
    project: Path, root: Path, app_dir: Path, ports: dict[str, int] | None = None, webroot: Path | None = None
) -> Path:
    """A prefix where `nginx -p ROOT -c ROOT/nginx.conf` runs the generated
    site: the certificate and static paths point into the test root and, for a
    live run (`ports`: http, https, web, flower), it listens and proxies on
    free loopback ports; certbot's webroot moves to `webroot` when given.
    Returns the main config file."""
    data = answers(project)
    domain = data["domain_name"]
    paths = host_paths(project)
    cert, key = self_signed_certificate(root / "tls", domain)
    text = nginx_site(project).read_text()
    text = replace_once(text, f"/etc/letsencrypt/live/{domain}/fullchain.pem", str(cert))
    text = replace_once(text, f"/etc/letsencrypt/live/{domain}/privkey.pem", str(key))
    text = replace_once(text, f"alias {paths['app']}/", f"alias {app_dir}/")
    if webroot:
        text = replace_once(text, "root /var/www/html;", f"root {webroot};")
    if ports:
        text = replace_once(text, "listen 80;", f"listen 127.0.0.1:{ports['http']};")
        text = replace_once(text, "listen 443 ssl;", f"listen 127.0.0.1:{ports['https']} ssl;")
        text = re.sub(r"^\s*listen \[::\].*\n", "", text, flags=re.M)
        text = replace_once(text, "server 127.0.0.1:8000;", f"server 127.0.0.1:{ports['web']};")
        if data["use_flower"]:
            flower = f"server 127.0.0.1:{data.get('flower_port', 5555)};"
            text = replace_once(text, flower, f"server 127.0.0.1:{ports['flower']};")
    site = root / "sites" / nginx_site(project).name
    site.parent.mkdir(parents=True, exist_ok=True)
    site.write_text(text)
    temp = root / "temp"
    temp.mkdir(mode=0o777, exist_ok=True)
    temp.chmod(0o777)
    main = root / "nginx.conf"
    main.write_text(
        f"""worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{
    worker_connections 64;
}}
http {{
    include /etc/nginx/mime.types;
    access_log {root}/access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {site};
}}
"""
    )
    return main


def nginx_command(main: Path, *args: str) -> list[str]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    return [nginx, "-p", str(main.parent), "-c", str(main), "-e", str(main.parent / "error.log"), *args]


# --- The sandbox, for the boot tests ---------------------------------------------

_SYSCALL_GROUPS: dict[str, set[str]] = {}


def syscalls(name: str) -> set[str]:
    """A system call or a @group, expanded the way systemd-analyze lists it."""
    if not name.startswith("@"):
        return {name}
    if name not in _SYSCALL_GROUPS:
        out = subprocess.run(
            ["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, check=True
        ).stdout
        found: set[str] = set()
        for line in out.splitlines()[1:]:
            word = line.strip()
            if word and not word.startswith("#"):
                found |= syscalls(word)
        _SYSCALL_GROUPS[name] = found
    return _SYSCALL_GROUPS[name]


def allowed_syscalls(unit: dict) -> set[str]:
    """The allow list that the unit's SystemCallFilter= lines add up to: the
    first line sets it, later `~` lines remove from it, others add to it."""
    allowed: set[str] | None = None
    for line in values(unit, "Service", "SystemCallFilter"):
        deny = line.startswith("~")
        names: set[str] = set()
        for word in line.lstrip("~").split():
            names |= syscalls(word)
        if allowed is None:
            assert not deny, "the sandbox emulation handles allow lists only"
            allowed = names
        elif deny:
            allowed -= names
        else:
            allowed |= names
    assert allowed, "no SystemCallFilter= allow list"
    return allowed
