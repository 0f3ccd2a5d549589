"""A replicated Redis for the failover tests: one primary, one replica (or more)
and three sentinels, all redis-server processes of our own on loopback ports.

`lag()` silences the first replica's replication link, as a congested or
broken network would, so that the primary acknowledges writes the replica
never receives: an iptables rule drops the packets of that one loopback
connection, from the primary's port to the replica's, and nothing else. That
widens Redis's asynchronous-replication window, which on loopback lasts
microseconds, to a size a test can observe. (A proxy on the link would not do:
the sentinels see the replica following another address than the primary's,
and point it at the primary directly.)
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from helpers import PrivateRedis, free_port, wait_for_port, wait_until

MASTER_NAME = "mymaster"
# A sentinel deems the primary down after 1 s of silence (the usual production
# value is 5 to 30 s), so that a test's failover takes seconds.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 10_000


@dataclass
class Sentinels:
    """Primary, `replicas` replicas and three sentinels. `url(db)` is the project's
    sentinel:// URL; the primary's password is `password`, the sentinels' own
    `sentinel_password`."""

    directory: Path
    replicas: int = 1
    password: str = "primary-secret"
    sentinel_password: str = "sentinel-secret"
    primary: PrivateRedis | None = None
    followers: list[PrivateRedis] = field(default_factory=list)
    dropped: list[list[str]] = field(default_factory=list)  # iptables rules lag() added
    ports: list[int] = field(default_factory=lambda: [free_port() for _ in range(3)])
    procs: list[subprocess.Popen] = field(default_factory=list)

    def url(self, db: int) -> str:
        return ";".join(f"sentinel://:{self.password}@127.0.0.1:{port}/{db}" for port in self.ports)

    @property
    def env(self) -> dict[str, str]:
        return {"REDIS_SENTINEL_MASTER": MASTER_NAME, "REDIS_SENTINEL_PASSWORD": self.sentinel_password}

    def start(self) -> Sentinels:
        # Every node knows the password of the others: any may become a replica.
        self.primary = PrivateRedis(
            self.directory / "primary", password=self.password, extra=["--masterauth", self.password]
        ).start()
        for number in range(self.replicas):
            # The replica needs no AOF of its own: what counts is what it received.
            # It announces its own port, so the sentinels reach it directly.
            self.followers.append(
                PrivateRedis(
                    self.directory / f"replica-{number}",
                    password=self.password,
                    appendonly=False,
                    extra=["--replicaof", "127.0.0.1", str(self.primary.port), "--masterauth", self.password],
                ).start()
            )
        for number, port in enumerate(self.ports):
            folder = self.directory / f"sentinel-{number}"
            folder.mkdir(parents=True, exist_ok=True)
            config = folder / "sentinel.conf"  # a sentinel rewrites its file: one each
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
                f"requirepass {self.sentinel_password}\nsentinel sentinel-pass {self.sentinel_password}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel auth-pass {MASTER_NAME} {self.password}\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            )
            binary = shutil.which("redis-server") or "/usr/bin/redis-server"
            log = (folder / "sentinel.log").open("w")
            self.procs.append(subprocess.Popen([binary, str(config), "--sentinel"], stdout=log, stderr=log))
            wait_for_port(port, proc=self.procs[-1])
        # A failover needs the replica known, and a majority of sentinels aware of each other.
        ready = wait_until(self.ready, timeout=60)
        assert ready, f"the sentinels never agreed on the set-up:\n{self.describe()}"
        return self

    def sentinel(self, port: int):
        import redis

        return redis.Redis(port=port, password=self.sentinel_password, socket_timeout=2, decode_responses=True)

    def ready(self) -> bool:
        import redis

        try:
            for follower in self.followers:
                with redis.Redis(port=follower.port, password=self.password, decode_responses=True) as replica:
                    if replica.info("replication").get("master_link_status") != "up":
                        return False
            for port in self.ports:
                with self.sentinel(port) as client:
                    state = client.sentinel_master(MASTER_NAME)
                    if state["num-other-sentinels"] < 2 or state["num-slaves"] < self.replicas:
                        return False
            return True
        except Exception:  # noqa: BLE001 - a sentinel still starting
            return False

    def primary_port(self, quorum: int = 2) -> int | None:
        """The primary's port, as `quorum` sentinels name it (all: 3)."""
        named = []
        for port in self.ports:
            with contextlib.suppress(Exception), self.sentinel(port) as client:
                named.append(client.sentinel_get_master_addr_by_name(MASTER_NAME)[1])
        votes = {int(p): named.count(p) for p in named}
        return next((p for p, count in votes.items() if count >= quorum), None)

    def wait_failover(self, timeout: float = 60) -> float:
        """Wait until the sentinels name a replica; the seconds it took."""
        started = time.monotonic()
        ports = {follower.port for follower in self.followers}
        promoted = wait_until(lambda: self.primary_port() in ports, timeout=timeout)
        assert promoted, f"no failover within {timeout} s:\n{self.describe()}"
        return time.monotonic() - started

    def kill_primary(self) -> None:
        self.primary.kill()

    def restart_old_primary(self) -> None:
        """Start the killed primary again, as its host's supervisor would: the
        sentinels make it a replica of the new one, which it then copies whole.

        Only once every sentinel names the new primary, as when the old host
        comes back after a while: a sentinel still naming the old primary would
        send clients to it, a primary again for a moment."""
        new = self.primary_port()
        agreed = wait_until(lambda: self.primary_port(quorum=len(self.ports)) == new, timeout=30)
        assert agreed, f"the sentinels never all named {new}:\n{self.describe()}"
        self.primary.start()

    def lag(self) -> None:
        """Silence the first replica's replication link: from now on, the replica
        receives nothing more from the primary, which keeps acknowledging writes."""
        import redis

        replica = self.followers[0]
        with redis.Redis(port=self.primary.port, password=self.password, decode_responses=True) as primary:
            links = primary.client_list(_type="replica")
        with redis.Redis(port=replica.port, password=self.password, decode_responses=True) as client:
            assert client.info("replication").get("master_link_status") == "up", self.describe()
        (link,) = links  # lag() is for one replica: CLIENT LIST does not say whose link is whose
        port = link["addr"].rpartition(":")[2]
        rule = ["INPUT", "-i", "lo", "-p", "tcp", "--sport", str(self.primary.port), "--dport", port,
                "-m", "comment", "--comment", f"cdc-sentinellab-{uuid.uuid4().hex[:8]}", "-j", "DROP"]  # fmt: skip
        subprocess.run(["iptables", "-I", *rule], check=True)
        self.dropped.append(rule)

    def describe(self) -> str:
        import redis

        lines = []
        for server in (self.primary, *self.followers):
            try:
                with redis.Redis(port=server.port, password=self.password, socket_timeout=2) as client:
                    info = client.info("replication")
                role, link = info.get("role"), info.get("master_link_status", "-")
                lines.append(f"redis :{server.port}: {role} of {info.get('master_port', '-')}, link {link}, "
                             f"{info.get('connected_slaves')} replicas")  # fmt: skip
            except redis.RedisError as error:
                lines.append(f"redis :{server.port}: {error}")
        for number in range(len(self.ports)):
            log = self.directory / f"sentinel-{number}" / "sentinel.log"
            if log.exists():
                lines += [f"sentinel-{number}: {line}" for line in log.read_text().splitlines()[-15:]]
        return "\n".join(lines)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for server in (self.primary, *self.followers):
            if server:
                server.kill()
        for rule in self.dropped:
            subprocess.run(["iptables", "-D", *rule], capture_output=True)
