"""A private RabbitMQ node in a container, for tests whose worker runs on the host.

The node is the stand-in of the RabbitMQ image compose.yaml names (4.3 today,
where the machine's own RabbitMQ is 3.10). It runs on a network of its own and
publishes AMQP on 127.0.0.1 only; both are removed afterwards.
"""

from __future__ import annotations

import contextlib
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from enginelab import images
from enginelab.engine import docker, require_engine
from helpers import wait_until


@dataclass(frozen=True)
class PrivateRabbitMQ:
    container: str
    url: str  # amqp://user:password@127.0.0.1:<published port>/<vhost>
    version: str  # the tag's major.minor: "4.3"
    tls_url: str | None = None  # amqps://…:<published port of 5671>/<vhost>, with `tls`

    @property
    def rabbitmqctl(self) -> str:
        """The command line that reaches this node's rabbitmqctl from the host."""
        return f"docker exec --user rabbitmq {self.container} rabbitmqctl"


# A TLS listener as https://www.rabbitmq.com/docs/ssl describes it; clients are
# not asked for certificates of their own.
TLS_CONF = """\
listeners.ssl.default = 5671
ssl_options.cacertfile = /etc/rabbitmq/tls/ca.pem
ssl_options.certfile = /etc/rabbitmq/tls/chain.pem
ssl_options.keyfile = /etc/rabbitmq/tls/key.pem
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
"""


@contextlib.contextmanager
def private_rabbitmq(
    project: Path, vhost: str = "cdc", tls: tuple[Path, Path, Path] | None = None
) -> Iterator[PrivateRabbitMQ]:
    """Start the stand-in of the RabbitMQ image `project`'s compose.yaml names, with
    its own administrator and vhost (the official image's RABBITMQ_DEFAULT_*).
    `tls`: (certificate chain, key, CA) files for a TLS listener as well."""
    require_engine()
    (reference,) = [ref for ref in images.image_references(project) if images.split_reference(ref)[0] == "rabbitmq"]
    image = images.standin(reference)
    name = f"cdc-rabbitmq-{uuid.uuid4().hex[:10]}"
    password = secrets.token_hex(16)
    mounts = []
    if tls:
        directory = Path(tls[0]).parent / name
        directory.mkdir()
        for source, target in zip(tls, ("chain.pem", "key.pem", "ca.pem"), strict=True):
            (directory / target).write_bytes(Path(source).read_bytes())
            (directory / target).chmod(0o644)  # the node runs as rabbitmq; a test key
        (directory / "20-tls.conf").write_text(TLS_CONF)
        mounts = ["--volume", f"{directory}:/etc/rabbitmq/tls:ro", "--publish", "127.0.0.1::5671",
                  "--volume", f"{directory / '20-tls.conf'}:/etc/rabbitmq/conf.d/20-tls.conf:ro"]  # fmt: skip
    docker("network", "create", name)
    try:
        env = {"RABBITMQ_DEFAULT_USER": "cdc", "RABBITMQ_DEFAULT_PASS": password, "RABBITMQ_DEFAULT_VHOST": vhost}
        docker(
            "run", "--detach", "--name", name, "--hostname", "rabbitmq", "--network", name,
            "--publish", "127.0.0.1::5672", *mounts,
            *[arg for key, value in env.items() for arg in ("--env", f"{key}={value}")],
            image,
        )  # fmt: skip

        def ready() -> bool:
            # The CLI tools only once the node is up: run before it, they would make
            # the Erlang cookie themselves, and the node could not read it.
            if "Server startup complete" not in docker("logs", name, check=False).stdout:
                return False
            listed = docker("exec", "--user", "rabbitmq", name, "rabbitmqctl", "-q", "list_vhosts", check=False)
            return vhost in listed.stdout.split()

        assert wait_until(ready, timeout=180, interval=1), docker("logs", name, check=False).stdout[-3000:]
        # "127.0.0.1:49153"
        port = docker("port", name, "5672/tcp").stdout.split()[0].rpartition(":")[2]
        version = images.tag_version(images.split_reference(reference)[1])
        tls_url = None
        if tls:
            tls_port = docker("port", name, "5671/tcp").stdout.split()[0].rpartition(":")[2]
            tls_url = f"amqps://cdc:{password}@127.0.0.1:{tls_port}/{vhost}"
        try:
            yield PrivateRabbitMQ(name, f"amqp://cdc:{password}@127.0.0.1:{port}/{vhost}", version, tls_url)
        except BaseException:
            # The node's side of a failure, in the test's captured output.
            state = docker("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name, check=False).stdout
            logs = docker("logs", "--tail", "120", name, check=False)
            print(f"{name}: {state}\n{logs.stdout}{logs.stderr}")
            raise
    finally:
        docker("rm", "--force", "--volumes", name, check=False)
        docker("network", "rm", name, check=False)
