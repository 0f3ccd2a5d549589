"""Hosts on one machine for the chaos run (benchmarks/chaos.py): broker hosts
that each run a redis-server and a sentinel, and worker hosts, all network
namespaces joined by veth pairs to the root namespace, which routes between
them and holds the web (the sender) and PostgreSQL.

    worker host 1 ─┐                 ┌─ broker host 1: redis-server :6379, sentinel :26379
    worker host 2 ─┼─ root namespace ┼─ broker host 2: redis-server :6379, sentinel :26379
    worker host 3 ─┘  web, database  └─ broker host 3: redis-server :6379, sentinel :26379

Every host has an address of its own and a route to the others through the
root namespace; the root namespace forwards between our links only (one
FORWARD rule, removed at the end), and PostgreSQL, which listens on loopback,
is reached through a forwarder on the first link's gateway. A link between two
hosts is cut by iptables rules inside one of them that drop what comes from
or goes to the other: packets vanish, nothing is reset.

The brokers run from configuration files, as Debian's units run them, so that
what a sentinel rewrites (a node made a replica, the sentinels it knows)
survives the node's restart.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from network import Host, Network, SilentProxy, ip

from helpers import POSTGRES, wait_until

MASTER_NAME = "mymaster"
REDIS_PORT, SENTINEL_PORT = 6379, 26379
# A sentinel deems a node down after 2 s of silence, and two of three must
# agree (the quorum): one cut link never starts a failover.
DOWN_AFTER_MS = 2000
FAILOVER_TIMEOUT_MS = 10_000


def iptables(namespace: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    command = [shutil.which("ip") or "/usr/sbin/ip", "netns", "exec", namespace, "iptables", "-w", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=check)


@dataclass
class BrokerHost:
    """A host running one redis-server and one sentinel, each from its own
    configuration file; killed and started again as its machine would be."""

    number: int
    host: Host
    directory: Path
    password: str
    sentinel_password: str
    redis: subprocess.Popen | None = None
    sentinel: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return self.host.links[0].address

    @property
    def name(self) -> str:
        return f"broker-{self.number + 1}"

    def configure(self, primary: str | None) -> None:
        """Write the configuration files; `primary`: the address to replicate, or None."""
        self.directory.mkdir(parents=True, exist_ok=True)
        redis_conf = [
            f"bind {self.address}", f"port {REDIS_PORT}", f"dir {self.directory}", 'save ""',
            # As compose.yaml runs it: every write in the append-only file, fsync'd each second.
            "appendonly yes", "maxmemory-policy noeviction",
            f"requirepass {self.password}", f"masterauth {self.password}",
        ]  # fmt: skip
        if primary:
            redis_conf.append(f"replicaof {primary} {REDIS_PORT}")
        (self.directory / "redis.conf").write_text("\n".join(redis_conf) + "\n")
        seed = primary or self.address
        (self.directory / "sentinel.conf").write_text(
            f"bind {self.address}\nport {SENTINEL_PORT}\ndir {self.directory}\n"
            f"requirepass {self.sentinel_password}\nsentinel sentinel-pass {self.sentinel_password}\n"
            f"sentinel monitor {MASTER_NAME} {seed} {REDIS_PORT} 2\n"
            f"sentinel auth-pass {MASTER_NAME} {self.password}\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
        )

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        for attribute, arguments in (("redis", []), ("sentinel", ["--sentinel"])):
            log = (self.directory / f"{attribute}.log").open("a")
            command = self.host.command(self.name, [binary, str(self.directory / f"{attribute}.conf"), *arguments])
            setattr(self, attribute, subprocess.Popen(command, stdout=log, stderr=log))
            log.close()

    def kill(self) -> None:
        """SIGKILL both, as the machine's crash would."""
        for proc in (self.redis, self.sentinel):
            if proc and proc.poll() is None:
                proc.kill()
                proc.wait(10)

    def pids(self) -> dict[str, int]:
        return {
            f"{self.name} {kind}": proc.pid
            for kind, proc in (("redis-server", self.redis), ("sentinel", self.sentinel))
            if proc and proc.poll() is None
        }


@dataclass
class ChaosNet:
    """Three broker hosts and `workers` worker hosts; `close()` removes them all."""

    directory: Path
    workers: int = 3
    password: str = field(default_factory=lambda: uuid.uuid4().hex)
    sentinel_password: str = field(default_factory=lambda: uuid.uuid4().hex)
    brokers: list[BrokerHost] = field(default_factory=list)
    worker_hosts: list[Host] = field(default_factory=list)
    cuts: dict[tuple[str, str], list[list[str]]] = field(default_factory=dict)
    tag: str = field(default_factory=lambda: f"cdc-chaos-{uuid.uuid4().hex[:8]}")

    def __post_init__(self):
        self.network = Network()
        self.forward: list[str] = []
        self.database: SilentProxy | None = None

    # --- Set-up -------------------------------------------------------------------

    def start(self) -> ChaosNet:
        for _ in range(3):
            self.brokers.append(self._broker(len(self.brokers)))
        self.worker_hosts = [self._host() for _ in range(self.workers)]
        # The root namespace routes between our links, and nothing else: Docker
        # sets FORWARD's policy to DROP.
        outside = f"cdc{self.network.tag}o+"
        self.forward = ["FORWARD", "-i", outside, "-o", outside, "-m", "comment", "--comment", self.tag, "-j", "ACCEPT"]
        subprocess.run(["iptables", "-w", "-I", *self.forward], check=True)
        if Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() != "1":
            raise RuntimeError("net.ipv4.ip_forward is 0: the root namespace cannot route between the hosts")
        self.database = SilentProxy(POSTGRES, listen=(self.gateway, 0))
        primary = self.brokers[0].address
        for broker in self.brokers:
            broker.configure(None if broker is self.brokers[0] else primary)
            broker.start()
        ready = wait_until(self.ready, timeout=60, interval=0.5)
        if not ready:
            raise RuntimeError(f"the sentinels never agreed on the set-up:\n{self.describe()}")
        return self

    def _host(self) -> Host:
        host = self.network.add_host()
        # Every other host, and the root namespace's addresses, through our gateway.
        subnet = str(self.network.subnet)
        ip("-n", host.namespace, "route", "add", subnet, "via", host.links[0].gateway)
        return host

    def _broker(self, number: int) -> BrokerHost:
        return BrokerHost(
            number, self._host(), self.directory / f"broker-{number + 1}", self.password, self.sentinel_password
        )

    @property
    def gateway(self) -> str:
        """An address of the root namespace that every host reaches."""
        return self.brokers[0].host.links[0].gateway

    def database_url(self, url: str) -> str:
        """`url` (a PostgreSQL URL on loopback) as the worker hosts reach it."""
        host, port = POSTGRES
        return url.replace(f"{host}:{port}", f"{self.gateway}:{self.database.port}")

    def url(self, db: int) -> str:
        return ";".join(f"sentinel://:{self.password}@{b.address}:{SENTINEL_PORT}/{db}" for b in self.brokers)

    @property
    def env(self) -> dict[str, str]:
        return {"REDIS_SENTINEL_MASTER": MASTER_NAME, "REDIS_SENTINEL_PASSWORD": self.sentinel_password}

    # --- State --------------------------------------------------------------------

    def redis(self, broker: BrokerHost):
        import redis

        return redis.Redis(host=broker.address, port=REDIS_PORT, password=self.password, socket_timeout=2)

    def sentinel(self, broker: BrokerHost):
        import redis

        return redis.Redis(
            host=broker.address, port=SENTINEL_PORT, password=self.sentinel_password, socket_timeout=2,
            decode_responses=True,
        )  # fmt: skip

    def ready(self) -> bool:
        """Two replicas linked, and every sentinel knowing them and the other two."""
        try:
            for broker in self.brokers:
                with self.sentinel(broker) as client:
                    state = client.sentinel_master(MASTER_NAME)
                    if state["num-other-sentinels"] < 2 or state["num-slaves"] < 2:
                        return False
            primary = next((b for b in self.brokers if b.address == self.primary()), None)
            if primary is None:
                return False
            with self.redis(primary) as client:
                return client.info("replication")["connected_slaves"] == 2
        except Exception:  # noqa: BLE001 - a node still starting
            return False

    def primary(self) -> str | None:
        """The primary's address, as a majority of the sentinels name it."""
        named = []
        for broker in self.brokers:
            with contextlib.suppress(Exception), self.sentinel(broker) as client:
                named.append(client.sentinel_get_master_addr_by_name(MASTER_NAME)[0])
        return next((address for address in set(named) if named.count(address) >= 2), None)

    def describe(self) -> str:
        lines = []
        for broker in self.brokers:
            try:
                with self.redis(broker) as client:
                    info = client.info("replication")
                lines.append(
                    f"{broker.name} ({broker.address}): {info.get('role')} of {info.get('master_host', '-')}, "
                    f"link {info.get('master_link_status', '-')}, {info.get('connected_slaves')} replicas"
                )
            except Exception as error:  # noqa: BLE001 - a dead node is part of the picture
                lines.append(f"{broker.name} ({broker.address}): {error!r}")
            log = broker.directory / "sentinel.log"
            if log.exists():
                lines += [f"  sentinel: {line}" for line in log.read_text().splitlines()[-8:]]
        return "\n".join(lines)

    # --- Faults -------------------------------------------------------------------

    def hosts(self) -> dict[str, Host]:
        """Every host by name: worker-N, broker-N."""
        named = {broker.name: broker.host for broker in self.brokers}
        named |= {f"worker-{number + 1}": host for number, host in enumerate(self.worker_hosts)}
        return named

    def links(self) -> list[tuple[str, str]]:
        """The links a fault may cut: worker to broker, broker to broker, and web to broker."""
        brokers = [broker.name for broker in self.brokers]
        workers = [f"worker-{number + 1}" for number in range(len(self.worker_hosts))]
        pairs = [(worker, broker) for worker in workers for broker in brokers]
        pairs += [(a, b) for i, a in enumerate(brokers) for b in brokers[i + 1 :]]
        return pairs + [("web", broker) for broker in brokers]

    def cut(self, a: str, b: str) -> None:
        """Drop every packet between hosts `a` and `b` (`a` may be "web", the root
        namespace), in both directions, by rules inside `b`."""
        inside = self.hosts()[b]
        peer = inside.links[0].gateway if a == "web" else self.hosts()[a].links[0].address
        rules = [
            ["INPUT", "-s", peer, "-m", "comment", "--comment", self.tag, "-j", "DROP"],
            ["OUTPUT", "-d", peer, "-m", "comment", "--comment", self.tag, "-j", "DROP"],
        ]
        for rule in rules:
            iptables(inside.namespace, "-I", *rule)
        self.cuts[(a, b)] = rules

    def mend(self, a: str, b: str) -> None:
        for rule in self.cuts.pop((a, b)):
            iptables(self.hosts()[b].namespace, "-D", *rule, check=False)

    def close(self) -> None:
        for broker in self.brokers:
            broker.kill()
        if self.database:
            self.database.close()
        if self.forward:
            subprocess.run(["iptables", "-w", "-D", *self.forward], capture_output=True)
        # The namespaces go, and the rules inside them with them.
        self.network.close()
