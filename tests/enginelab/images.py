"""Local images: a Debian base made with debootstrap, and stand-ins for the
images a rendered project names.

There is no container registry here, so every `FROM`, `COPY --from=` and
`image:` of a rendered Dockerfile or compose.yaml is built locally and tagged
with exactly that reference: the generated files keep naming the official
images. Each stand-in is built from Debian trixie by the short recipe in
`standins/<name>/Dockerfile`, which reproduces what the official image
documents and compose.yaml relies on (each recipe cites those docs).

Builds are cached by a hash of their inputs (recipe files, base image, tag),
stored as an image label: a warm run reuses every image. A file lock keeps
parallel xdist workers from building the same image twice.

The machine's CA bundle goes into the base image, with SSL_CERT_FILE pointing
at it, as a corporate proxy's set-up would: apt, uv and pip inside builds then
reach the package registries. Nothing of it goes into the generated Dockerfile.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

import yaml
from filelock import FileLock

from helpers import CACHE

from .engine import docker

HERE = Path(__file__).resolve().parent
STANDINS = HERE / "standins"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
IN_IMAGE_CA_BUNDLE = "/usr/local/share/host-ca/ca-certificates.crt"
LABEL = "org.copier-django-celery.inputs"

# Repository of an image reference -> its stand-in recipe (standins/<recipe>/).
RECIPES = {
    "python": "python",
    "ghcr.io/astral-sh/uv": "uv",
    "redis": "redis",
    "postgres": "postgres",
    "rabbitmq": "rabbitmq",
}


def _digest(*parts: bytes | str) -> str:
    sha = hashlib.sha256()
    for part in parts:
        sha.update(part if isinstance(part, bytes) else part.encode())
        sha.update(b"\0")
    return sha.hexdigest()[:16]


def _image_label(reference: str) -> str | None:
    proc = docker("image", "inspect", "--format", "{{json .Config.Labels}}", reference, check=False)
    if proc.returncode != 0:
        return None
    return (json.loads(proc.stdout) or {}).get(LABEL)


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 or one-line sources)."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        if not path.is_file():
            continue
        text = path.read_text()
        for match in re.finditer(r"^(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(\S+)", text, re.M):
            uri = match.group(1).rstrip("/")
            if uri.endswith("/debian"):
                return uri
    return "http://deb.debian.org/debian"


# --- The base image ------------------------------------------------------------------

BASE_PACKAGES = ["ca-certificates"]


def base_image(suite: str = "trixie") -> str:
    """`debootstrap --variant=minbase` of `suite`, imported as an image; its tag."""
    mirror = debian_mirror()
    inputs = _digest("base-v2", suite, mirror, *BASE_PACKAGES, HOST_CA_BUNDLE.read_bytes())
    tag = f"cdc-base/{suite}:{inputs}"
    CACHE.mkdir(exist_ok=True)
    with FileLock(str(CACHE / f"image-base-{suite}.lock")):
        if _image_label(tag) == inputs:
            return tag
        with tempfile.TemporaryDirectory(prefix=f"debootstrap-{suite}-", dir=CACHE) as tmp:
            rootfs = Path(tmp) / "rootfs"
            subprocess.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(BASE_PACKAGES)}",
                    suite,
                    str(rootfs),
                    mirror,
                ],
                check=True,
                capture_output=True,
                timeout=900,
            )
            ca = rootfs / IN_IMAGE_CA_BUNDLE.lstrip("/")
            ca.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(HOST_CA_BUNDLE, ca)
            # Debian's apt in an image: no recommends, no docs, no cache kept. The
            # mirror may be a snapshot, whose sid Release file is past the
            # Valid-Until date it carries (debootstrap does not check it, apt does).
            (rootfs / "etc/apt/apt.conf.d/90-image").write_text(
                'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n'
                'Acquire::Check-Valid-Until "false";\n'
            )
            shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
            (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True)
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
            changes = [
                f"ENV SSL_CERT_FILE={IN_IMAGE_CA_BUNDLE}",
                f"ENV REQUESTS_CA_BUNDLE={IN_IMAGE_CA_BUNDLE}",
                f"ENV PIP_CERT={IN_IMAGE_CA_BUNDLE}",
                "ENV DEBIAN_FRONTEND=noninteractive",
                f"LABEL {LABEL}={inputs}",
                'CMD ["bash"]',
            ]
            argv = ["docker", "import", *[arg for change in changes for arg in ("--change", change)], "-", tag]
            subprocess.run(argv, stdin=tar.stdout, check=True, capture_output=True, timeout=600)
            tar.wait()
            if tar.returncode != 0:
                raise AssertionError(f"tar of the {suite} rootfs exited {tar.returncode}")
    return tag


# --- The image references a rendered project names ------------------------------------


def image_references(project: Path) -> list[str]:
    """Every image the project's Dockerfile and compose.yaml pull, in order."""
    references: list[str] = []
    dockerfile = project / "Dockerfile"
    if dockerfile.exists():
        text = dockerfile.read_text()
        args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.M))
        stages = {m.lower() for m in re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.M | re.I)}

        def expand(value: str) -> str:
            return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), value)

        for match in re.finditer(r"^FROM\s+(?:--\S+\s+)*(\S+)|--from=(\S+)", text, re.M | re.I):
            reference = expand(match.group(1) or match.group(2))
            if reference.lower() not in stages:
                references.append(reference)
    compose = project / "compose.yaml"
    if compose.exists():
        for service in (yaml.safe_load(compose.read_text()).get("services") or {}).values():
            if "build" not in service and "image" in service:
                references.append(service["image"])
    return list(dict.fromkeys(references))


def split_reference(reference: str) -> tuple[str, str]:
    repository, _, tag = reference.rpartition(":") if ":" in reference.rsplit("/", 1)[-1] else (reference, "", "latest")
    return repository, tag


def recipe_for(reference: str) -> str:
    repository, _ = split_reference(reference)
    name = repository.removeprefix("docker.io/").removeprefix("library/")
    if name not in RECIPES:
        raise AssertionError(f"no stand-in recipe for {reference!r}: add one under {STANDINS}")
    return RECIPES[name]


def _recipe_files(recipe: str) -> list[Path]:
    return sorted(p for p in (STANDINS / recipe).rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def _uv_binaries(version: str, context: Path) -> None:
    """/uv and /uvx from PyPI's uv wheel (the official image ships those two files).

    The musllinux wheel: its binaries are static, as the official image's are
    (uv's Dockerfile builds x86_64-unknown-linux-musl); the manylinux ones need
    glibc, which a FROM scratch image does not have.
    """
    wheels = CACHE / "uv-wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    spec = f"uv=={version}.*" if version.count(".") == 1 else f"uv=={version}"
    subprocess.run(
        [
            shutil.which("pip") or "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--platform",
            "musllinux_1_1_x86_64",
            "--python-version",
            "3.11",
            "--dest",
            str(wheels),
            spec,
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    candidates = sorted(wheels.glob(f"uv-{version}*musllinux*x86_64*.whl"))
    if not candidates:
        raise AssertionError(f"no uv wheel for {spec} in {wheels}")
    with zipfile.ZipFile(candidates[-1]) as wheel:
        for name in wheel.namelist():
            if re.search(r"\.data/scripts/uvx?$", name):
                target = context / Path(name).name
                target.write_bytes(wheel.read(name))
                target.chmod(0o755)


# Python minor version -> (Debian suite, package) that has it. Other versions
# get trixie's python3 (3.13), and the stand-in's label says so.
PYTHONS = {"3.13": ("trixie", "python3"), "3.14": ("sid", "python3.14")}
# RabbitMQ minor version -> the Debian suite that has it (trixie: 4.0.5).
RABBITMQS = {"4.3": "sid"}


def tag_version(tag: str) -> str:
    """The major.minor version an image tag names: "3.14-slim-trixie" -> "3.14"."""
    return ".".join(tag.split("-")[0].split(".")[:2])


def standin(reference: str, suite: str = "trixie") -> str:
    """Build the stand-in for `reference` (once per set of inputs) and tag it so."""
    recipe = recipe_for(reference)
    _, tag = split_reference(reference)
    version = tag_version(tag)
    build_args = {"TAG": tag}
    if recipe == "python":
        suite, package = PYTHONS.get(version, PYTHONS["3.13"])
        build_args.update(SUITE=suite, PACKAGE=package, VERSION=version if version in PYTHONS else "3.13")
    elif recipe == "rabbitmq":
        suite = RABBITMQS.get(version, suite)
        build_args.update(SUITE=suite)
    base = base_image(suite)
    build_args["BASE"] = base
    files = _recipe_files(recipe)
    inputs = _digest(
        "standin-v3",
        recipe,
        *sorted(f"{key}={value}" for key, value in build_args.items()),
        *(f"{p.relative_to(STANDINS)}\0{p.read_text()}" for p in files),
    )
    with FileLock(str(CACHE / f"image-standin-{recipe}.lock")):
        if _image_label(reference) == inputs:
            return reference
        with tempfile.TemporaryDirectory(prefix=f"standin-{recipe}-", dir=CACHE) as tmp:
            context = Path(tmp)
            for path in files:
                target = context / path.relative_to(STANDINS / recipe)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
            if recipe == "uv":
                _uv_binaries(tag, context)
            docker(
                "build",
                "--quiet",
                *[arg for key, value in build_args.items() for arg in ("--build-arg", f"{key}={value}")],
                "--label",
                f"{LABEL}={inputs}",
                "--tag",
                reference,
                str(context),
                timeout=1800,
            )
    return reference


def standins_for(project: Path, suite: str = "trixie") -> list[str]:
    """Stand-ins for every image reference of a rendered project."""
    return [standin(reference, suite) for reference in image_references(project)]
