"""Network faults for the liveness tests: a TCP proxy that can go silent, and
hosts on one machine (Linux network namespaces joined by veth pairs).

Everything here talks to loopback or to addresses inside the namespaces it
creates, and removes what it made, even when a test fails.
"""

from __future__ import annotations

import contextlib
import ipaddress
import selectors
import shutil
import socket
import subprocess
import threading
import uuid
from dataclasses import dataclass, field


class SilentProxy:
    """A TCP proxy from `listen` to `target` that can swallow its connections.

    `swallow()` makes every connection open at that moment a black hole: bytes
    from either side are read and dropped, nothing is closed, no reset is sent,
    as a NAT or firewall that lost the connection's state, or a hung middlebox,
    would behave. Connections made afterwards pass normally.
    """

    def __init__(self, target: tuple[str, int], listen: tuple[str, int] = ("127.0.0.1", 0)):
        self.target = target
        self.server = socket.create_server(listen)
        self.address = self.server.getsockname()[:2]
        self.port = self.address[1]
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.server, selectors.EVENT_READ)
        self.peers: dict[socket.socket, socket.socket] = {}
        self.silent: set[socket.socket] = set()
        self.accepted = 0
        self.lock = threading.Lock()
        self.closing = False
        self.thread = threading.Thread(target=self._serve, name="silent-proxy", daemon=True)
        self.thread.start()

    def swallow(self) -> int:
        """Silence every open connection; returns how many there were."""
        with self.lock:
            self.silent.update(self.peers)
            return len(self.peers) // 2

    def open_connections(self) -> int:
        with self.lock:
            return (len(self.peers) - len(self.silent)) // 2

    def close(self) -> None:
        self.closing = True
        self.thread.join(5)
        with self.lock:
            for sock in [*self.peers, self.server]:
                sock.close()
            self.peers.clear()

    def _serve(self) -> None:
        while not self.closing:
            for key, _ in self.selector.select(timeout=0.2):
                sock = key.fileobj
                if sock is self.server:
                    self._accept()
                else:
                    self._pump(sock)

    def _accept(self) -> None:
        client, _ = self.server.accept()
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        with self.lock:
            self.accepted += 1
            for one, other in ((client, upstream), (upstream, client)):
                one.setblocking(False)
                self.peers[one] = other
                self.selector.register(one, selectors.EVENT_READ)

    def _pump(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        with self.lock:
            other = self.peers.get(sock)
            if other is None:
                return
            if not data:
                self._drop(sock, other)
            elif sock not in self.silent:
                try:
                    # Bounded: a peer behind a cut link stops taking bytes.
                    other.settimeout(5)
                    other.sendall(data)
                    other.setblocking(False)
                except OSError:
                    self._drop(sock, other)

    def _drop(self, *socks: socket.socket) -> None:
        for sock in socks:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(sock)
            self.peers.pop(sock, None)
            self.silent.discard(sock)
            sock.close()


# --- Hosts on one machine ----------------------------------------------------------


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    command = [shutil.which("ip") or "/usr/sbin/ip", *args]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def claim_subnet() -> tuple[ipaddress.IPv4Network, str]:
    """A 10.x.y.0/24 that no interface of this machine uses, claimed by making an
    empty network namespace named after it (atomic: parallel tests never share
    one). Returns the subnet and the claim's name; delete the namespace to free it."""
    used = ip("-4", "-o", "addr").stdout + ip("-4", "route").stdout
    for third in range(200, 250):
        for second in (213, 231, 177):
            claim = f"cdc-net-{second}-{third}"
            if f"10.{second}.{third}." not in used and ip("netns", "add", claim, check=False).returncode == 0:
                return ipaddress.ip_network(f"10.{second}.{third}.0/24"), claim
    raise RuntimeError("no unused 10.x.y.0/24 subnet")


@dataclass
class Link:
    """A veth pair from the root namespace (`gateway`, on `outside`) into a
    host's namespace (`address`)."""

    outside: str
    gateway: str
    address: str

    def cut(self) -> None:
        """Partition: the link goes down, its packets are lost, nothing is reset."""
        ip("link", "set", self.outside, "down")

    def mend(self) -> None:
        ip("link", "set", self.outside, "up")


@dataclass
class Host:
    """A network namespace, joined to the root namespace by its links."""

    namespace: str
    links: list[Link] = field(default_factory=list)

    def cut(self) -> None:
        for link in self.links:
            link.cut()

    def mend(self) -> None:
        for link in self.links:
            link.mend()

    def command(self, hostname: str, argv: list[str]) -> list[str]:
        """`argv` run inside the namespace, in a UTS namespace of its own named `hostname`."""
        script = 'hostname "$0" && exec "$@"'
        return [
            shutil.which("ip") or "/usr/sbin/ip", "netns", "exec", self.namespace,
            "unshare", "--uts", "sh", "-c", script, hostname, *argv,
        ]  # fmt: skip


@dataclass
class Network:
    """Hosts made by `add_host`, removed by `close` (namespaces and veth pairs)."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    hosts: list[Host] = field(default_factory=list)
    links: int = 0

    def __post_init__(self):
        self.subnet, self.claim = claim_subnet()

    def add_host(self) -> Host:
        host = Host(f"cdc-{self.tag}-{len(self.hosts)}")
        self.hosts.append(host)  # before creating anything: close() removes what exists
        ip("netns", "add", host.namespace)
        ip("-n", host.namespace, "link", "set", "lo", "up")
        self.add_link(host)
        return host

    def add_link(self, host: Host) -> Link:
        """Another link into `host`, on a /30 of its own."""
        number = self.links
        self.links += 1
        base = self.subnet.network_address + 4 * number
        link = Link(f"cdc{self.tag}o{number}", str(base + 1), str(base + 2))
        inside = f"cdc{self.tag}i{number}"
        host.links.append(link)
        ip("link", "add", link.outside, "type", "veth", "peer", "name", inside)
        ip("link", "set", inside, "netns", host.namespace)
        ip("addr", "add", f"{link.gateway}/30", "dev", link.outside)
        ip("link", "set", link.outside, "up")
        ip("-n", host.namespace, "addr", "add", f"{link.address}/30", "dev", inside)
        ip("-n", host.namespace, "link", "set", inside, "up")
        return link

    def close(self) -> None:
        for host in self.hosts:
            for link in host.links:
                # Deleting one end of a veth pair deletes the other.
                ip("link", "del", link.outside, check=False)
            ip("netns", "del", host.namespace, check=False)
        self.hosts.clear()
        ip("netns", "del", self.claim, check=False)


def netns_available() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if not shutil.which("ip") or not shutil.which("unshare"):
        return "iproute2 (ip) and util-linux (unshare) are needed"
    probe = f"cdc-probe-{uuid.uuid4().hex[:6]}"
    made = ip("netns", "add", probe, check=False)
    ip("netns", "del", probe, check=False)
    return None if made.returncode == 0 else f"ip netns add failed: {made.stderr.strip()}"
