"""A private RabbitMQ node in a container, for tests whose worker runs on the host.

The node is the stand-in of the RabbitMQ image compose.yaml names (4.3 today,
where the machine's own RabbitMQ is 3.10). It runs on a network of its own and
publishes AMQP on 127.0.0.1 only; both are removed afterwards.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from enginelab import images
from enginelab.engine import docker, require_engine
from helpers import free_port, wait_until


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

    def suspend_consumers(self, vhost: str, queue: str) -> str:
        """Stop RabbitMQ feeding the consumers of `queue`, leaving their connections
        alive: the node suspends their channel processes (sys:suspend), so what it
        delivers waits in their mailboxes and heartbeats go on. Returns what the
        node answered: the list of `ok`s, one per consumer."""
        expression = (
            f'[sys:suspend(proplists:get_value(channel_pid, C)) || C <- rabbit_amqqueue:consumers_all(<<"{vhost}">>),'
            f' element(4, proplists:get_value(queue_name, C)) =:= <<"{queue}">>].'
        )
        return docker("exec", "--user", "rabbitmq", self.container, "rabbitmqctl", "eval", expression).stdout.strip()


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


@dataclass
class RabbitMQCluster:
    """Three (or more) RabbitMQ nodes clustered on a network of their own, each
    publishing AMQP on 127.0.0.1. `url` is Celery's failover list of all nodes."""

    network: str
    containers: list[str]
    urls: list[str]
    version: str

    @property
    def url(self) -> str:
        return ";".join(self.urls)

    @property
    def ports(self) -> list[int]:
        """Each node's AMQP port on 127.0.0.1, in the URL list's order."""
        return [urlsplit(url).port for url in self.urls]

    @property
    def rabbitmqctl(self) -> str:
        """rabbitmqctl on a node that is up (faultlab_queue's FAULTLAB_RABBITMQCTL)."""
        return f"docker exec --user rabbitmq {self.running()[0]} rabbitmqctl"

    def ctl(self, container: str, *args: str, check: bool = True):
        return docker("exec", "--user", "rabbitmq", container, "rabbitmqctl", *args, check=check)

    def running(self) -> list[str]:
        states = docker("inspect", "--format", "{{.Name}} {{.State.Running}}", *self.containers).stdout.split("\n")
        return [line.split()[0].lstrip("/") for line in states if line.endswith(" true")]

    def node_name(self, container: str) -> str:
        return f"rabbit@{container}"

    def leader(self, vhost: str, queue: str) -> str:
        """The container whose node leads the quorum queue."""
        listed = self.ctl(self.running()[0], "-q", "list_queues", "-p", vhost, "name", "leader", "--no-table-headers")
        leaders = dict(line.split("\t") for line in listed.stdout.splitlines() if "\t" in line)
        return leaders[queue].split("@", 1)[1]

    def members_running(self, container: str) -> int:
        """How many nodes `container`'s node sees running."""
        status = self.ctl(container, "-q", "cluster_status", "--formatter", "json", check=False)
        if status.returncode != 0:
            return 0
        return len(json.loads(status.stdout).get("running_nodes", []))

    def describe(self, vhost: str) -> str:
        """For a failure's message: each node's view of the queues (leader,
        members, consumers, ready messages), its consumers, and its last log lines."""
        lines = []
        for container in self.containers:
            for args in (
                ["list_queues", "-p", vhost, "name", "leader", "members", "online", "consumers", "messages_ready"],
                ["list_consumers", "-p", vhost, "queue_name", "channel_pid", "ack_required", "active"],
            ):
                listed = self.ctl(container, "-q", "--timeout", "10", *args, check=False)
                lines.append(f"{container}: {args[0]}:\n{listed.stdout}{listed.stderr}")
            logs = docker("logs", "--tail", "40", container, check=False)
            lines.append(f"{container}: log:\n{logs.stdout[-6000:]}{logs.stderr[-6000:]}")
        return "\n".join(lines)

    def kill(self, container: str) -> None:
        docker("kill", container)

    def restart(self, container: str) -> None:
        """Start a killed node again, as its supervisor would: same name, data and port."""
        docker("start", container)

    def address(self, container: str) -> str:
        return docker("inspect", "--format", f"{{{{(index .NetworkSettings.Networks \"{self.network}\").IPAddress}}}}",
                      container).stdout.strip()  # fmt: skip

    def partition(self, container: str) -> None:
        """Cut `container`'s node off from the other nodes, not from the clients:
        inside its network namespace, drop every packet to or from the other
        nodes. Clients reach it through the host's port mapping, from the
        network's gateway, and still do."""
        pid = docker("inspect", "--format", "{{.State.Pid}}", container).stdout.strip()
        for other in self.containers:
            if other != container:
                peer = self.address(other)
                for rule in (["INPUT", "-s", peer], ["OUTPUT", "-d", peer]):
                    subprocess.run(["nsenter", "-t", pid, "-n", "iptables", "-I", *rule, "-j", "DROP"], check=True)

    def heal(self, container: str) -> None:
        pid = docker("inspect", "--format", "{{.State.Pid}}", container).stdout.strip()
        for chain in ("INPUT", "OUTPUT"):
            subprocess.run(["nsenter", "-t", pid, "-n", "iptables", "-F", chain], check=True)


@contextlib.contextmanager
def rabbitmq_cluster(project: Path, vhost: str = "cdc", size: int = 3) -> Iterator[RabbitMQCluster]:
    """Start `size` stand-ins of the RabbitMQ image `project`'s compose.yaml names,
    with one Erlang cookie, and join them into one cluster
    (https://www.rabbitmq.com/docs/clustering#creating)."""
    require_engine()
    (reference,) = [ref for ref in images.image_references(project) if images.split_reference(ref)[0] == "rabbitmq"]
    image = images.standin(reference)
    network = f"cdc-rmq-{uuid.uuid4().hex[:8]}"
    containers = [f"{network}-{number}" for number in range(size)]
    password, cookie = secrets.token_hex(16), secrets.token_hex(20)
    env = {"RABBITMQ_DEFAULT_USER": "cdc", "RABBITMQ_DEFAULT_PASS": password, "RABBITMQ_DEFAULT_VHOST": vhost}
    # The cookie written before the node starts: the CLI tools read the same file.
    start = (f'printf %s "{cookie}" > /var/lib/rabbitmq/.erlang.cookie && chmod 600 /var/lib/rabbitmq/.erlang.cookie'
             " && exec docker-entrypoint.sh rabbitmq-server")  # fmt: skip
    # Fixed host ports: a node started again keeps its place in the clients' URL list.
    ports = [free_port() for _ in containers]
    docker("network", "create", network)
    try:
        for name, port in zip(containers, ports, strict=True):
            docker(
                "run", "--detach", "--name", name, "--hostname", name, "--network", network,
                "--publish", f"127.0.0.1:{port}:5672", "--entrypoint", "sh",
                *[arg for key, value in env.items() for arg in ("--env", f"{key}={value}")],
                image, "-c", start,
            )  # fmt: skip

        def booted(name: str) -> bool:
            return "Server startup complete" in docker("logs", name, check=False).stdout

        for name in containers:
            assert wait_until(lambda name=name: booted(name), timeout=180, interval=1), docker(
                "logs", name, check=False
            ).stdout[-3000:]
        first = containers[0]
        for name in containers[1:]:
            ctl = ["exec", "--user", "rabbitmq", name, "rabbitmqctl", "-q"]
            docker(*ctl, "stop_app")
            docker(*ctl, "join_cluster", f"rabbit@{first}")
            docker(*ctl, "start_app")
        urls = [f"amqp://cdc:{password}@127.0.0.1:{port}/{vhost}" for port in ports]
        version = images.tag_version(images.split_reference(reference)[1])
        cluster = RabbitMQCluster(network, containers, urls, version)
        formed = wait_until(lambda: cluster.members_running(first) == size, timeout=120, interval=1)
        assert formed, cluster.ctl(first, "cluster_status", check=False).stdout
        assert wait_until(
            lambda: vhost in cluster.ctl(first, "-q", "list_vhosts", check=False).stdout.split(), 60, 1
        ), "the default vhost was never created"
        try:
            yield cluster
        except BaseException:
            for name in containers:
                logs = docker("logs", "--tail", "60", name, check=False)
                print(f"{name}:\n{logs.stdout}{logs.stderr}")
            raise
    finally:
        for name in containers:
            docker("rm", "--force", "--volumes", name, check=False)
        docker("network", "rm", network, check=False)
