"""What durable publishing costs: enqueue rate with BROKER_PUBLISH_REPLICAS=1
(each publish waits, with Redis's WAIT, until a replica holds it) against 0 (the
primary's acknowledgement alone), side by side in one run. Asserts nothing.

    .venv/bin/python benchmarks/durable_publish.py [--rounds 5] [--tasks 3000] [--delay-ms 0]

The suite's project and bench app (benchmarks/suite.py), against a private
primary and its replica on loopback. The two settings alternate within each
round, each sending --tasks no-op tasks with .delay(), one by one, as web
requests would; no worker runs. --delay-ms puts the replica that many
milliseconds (round trip) away, as another zone would be, through a delaying
proxy on its replication link. See docs/reliability.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import threading
from pathlib import Path

from suite import FULL, QUEUE, ROOT, Bench

from helpers import PrivateRedis, wait_until

SETTINGS = {"primary only": "0", "durable": "1"}


class DelayProxy:
    """A TCP proxy on loopback that holds every byte for `delay_ms` / 2 in each
    direction, as a link to another zone would (this machine has no netem)."""

    def __init__(self, target_port: int, delay_ms: float):
        self.target_port, self.delay = target_port, delay_ms / 2000
        self.loop = asyncio.new_event_loop()
        self.server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    async def _serve(self, reader, writer):
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(self._pump(reader, upstream_writer), self._pump(upstream_reader, writer))

    async def _pump(self, reader, writer):
        # Constant delay, so bytes keep their order.
        while chunk := await reader.read(65536):
            self.loop.call_later(self.delay, writer.write, chunk)
        self.loop.call_later(self.delay, writer.close)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="round trip to the replica")
    parser.add_argument("--template", type=Path, default=ROOT)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory(prefix="durable-") as tmp, contextlib.ExitStack() as stack:
        bench = Bench(Path(tmp), args.template.resolve(), FULL)
        bench.setup(stack)  # the suite's primary: bench.redis, without AOF
        upstream = bench.redis.port
        if args.delay_ms:
            proxy = DelayProxy(bench.redis.port, args.delay_ms)
            stack.callback(proxy.close)
            upstream = proxy.port
        replica = PrivateRedis(Path(tmp) / "replica", appendonly=False)
        replica.extra = ["--replicaof", "127.0.0.1", str(upstream)]
        replica.start()
        stack.callback(replica.stop)
        linked = wait_until(lambda: bench.r.info("replication").get("connected_slaves") == 1, timeout=30)
        assert linked, "the replica never linked to the primary"
        for round_number in range(args.rounds):
            names = list(SETTINGS)[round_number % 2 :] + list(SETTINGS)[: round_number % 2]
            for name in names:
                bench.r.delete(QUEUE)
                bench.env["BROKER_PUBLISH_REPLICAS"] = SETTINGS[name]
                result = bench.bench("generated", "enqueue", "accumulate", args.tasks)
                queued = bench.r.llen(QUEUE)
                assert queued == args.tasks, f"{name}: {queued} queued of {args.tasks}"
                rates[name].append(result["sent"] / result["seconds"])
                print(f"round {round_number + 1} {name:12} {rates[name][-1]:8.0f} tasks/s", flush=True)
    base = statistics.median(rates["primary only"])
    print(f"\n{args.tasks} no-op .delay() calls, one by one, replica round trip {args.delay_ms:g} ms; "
          f"medians of {args.rounds} rounds:\n")  # fmt: skip
    print("| publish | tasks/s | ratio to primary only |")
    print("|---|---|---|")
    for name in SETTINGS:
        rate = statistics.median(rates[name])
        print(f"| {name} (BROKER_PUBLISH_REPLICAS={SETTINGS[name]}) | {rate:.0f} | {rate / base:.2f} |")


if __name__ == "__main__":
    main()
