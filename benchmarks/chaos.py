"""Chaos: three worker hosts and a replicated Redis under steady load, a fault every 20 to 40 s.

    .venv/bin/python benchmarks/chaos.py [--minutes 10] [--rate 20] [--seed N]

A script, not a timed test; CI runs a 2-minute form (tests/test_chaos.py).
Needs root: the hosts are network namespaces (tests/chaoslab).

- Three broker hosts, each with a redis-server and a sentinel (one primary,
  two replicas, quorum 2), and three worker hosts, each running the Procfile's
  worker of the default queue. The web, here the fault tests' sender, and
  PostgreSQL are on the root namespace, which routes between the hosts.
- The project is the default Redis variant with the fault tests' `faultlab`
  app and small time limits (tests/test_faults.py), on its generated
  defaults: sentinel:// URLs, durable publishing (BROKER_PUBLISH_REPLICAS=1).
- The sender publishes `--rate` tasks a second for `--minutes`, and tries a
  refused publish again for up to 120 s, as a client retries a 503.
- Every 20 to 40 s, one fault, healed 5 to 15 s later, so that one fault at a
  time is in force, as the three-node set-up is built to survive:
  - a worker host's worker SIGKILLed with its pool, started again (systemd's
    Restart=always);
  - a broker host crashing: its redis-server and sentinel SIGKILLed, started
    again from their configuration files (the primary's death is a failover);
  - a link cut, both ways, packets dropped without a reset: worker to broker,
    broker to broker, or web to broker.
  The kinds come from a shuffled bag, so that every three faults hold one of
  each; the rest is random (`--seed` repeats a run).
- A process that exits by itself is started again and counted: it is reported.

At the end, once the queue has drained: tasks sent, completed, lost (never
recorded: must be 0), duplicate deliveries and how many of them the idempotent
write absorbed, publishes refused and retried, the longest gaps without an
accepted publish and without a completed task, the faults, and the memory
(PSS) of every process 10 s into the load and 10 s before its end.

Exits 1 when a task was lost. Writes the report to .cache/chaos-report.md and
prints, last, its figures as one JSON line. See docs/reliability.md ("Chaos").
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from chaoslab import ChaosNet  # noqa: E402
from network import netns_available  # noqa: E402
from soak import memory, memory_table  # noqa: E402
from test_faults import FAULT_APP, MAX_COUNTDOWN, QUEUE, VARIANTS, WORKER, Lab, last_json  # noqa: E402

from helpers import CACHE, Service, postgres_database, procfile, project_env, project_venv, render, run, start  # noqa: E402

BATCH = "chaos"
TASK_SECONDS = 0.1
INTERVAL, HEAL = (20, 40), (5, 15)
KINDS = ("worker", "broker", "link")


@dataclass
class Fault:
    at: float  # seconds into the load
    wall: float  # and its Unix time
    kind: str
    target: str
    heal_at: float
    undo: Callable[[], str]  # heals the fault; says how
    healed: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass
class Chaos:
    net: ChaosNet
    lab: Lab
    worker_env: dict
    rng: random.Random
    began: float = 0.0
    workers: list[Service] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    unplanned: list[str] = field(default_factory=list)
    bag: list[str] = field(default_factory=list)
    down: set[str] = field(default_factory=set)  # what a fault holds down: not restarted by the watch
    failover: tuple[str, float] | None = None  # (old primary, killed at)

    def now(self) -> float:
        return time.monotonic() - self.began

    def start_worker(self, number: int) -> Service:
        """The Procfile's worker, on worker host `number`, whose host name is worker-N."""
        hostname = f"worker-{number + 1}"
        command = procfile(self.lab.project)[WORKER]
        host = self.net.worker_hosts[number]
        argv = host.command(hostname, ["sh", "-c", f"exec {command}"])
        return start(hostname, argv, self.lab.project, self.worker_env, self.lab.logdir)

    def inject(self) -> Fault:
        if not self.bag:
            self.bag = list(KINDS)
            self.rng.shuffle(self.bag)
        kind = self.bag.pop()
        heal_at = self.now() + self.rng.uniform(*HEAL)
        if kind == "worker":
            number = self.rng.randrange(len(self.workers))
            self.workers[number].kill()
            target, notes = f"worker-{number + 1}", ["SIGKILL, with its pool"]

            def undo() -> str:
                self.workers[number] = self.start_worker(number)
                return "started again"

        elif kind == "broker":
            broker = self.rng.choice(self.net.brokers)
            primary = self.net.primary()
            broker.kill()
            target = broker.name
            if broker.address == primary:
                notes = ["the primary: redis-server and sentinel SIGKILLed"]
                self.failover = (primary, time.monotonic())
            else:
                notes = ["a replica: redis-server and sentinel SIGKILLed"]

            def undo() -> str:
                broker.start()
                return "started again"

        else:
            a, b = self.rng.choice(self.net.links())
            self.net.cut(a, b)
            target, notes = f"{a} to {b}", ["packets dropped both ways"]

            def undo() -> str:
                self.net.mend(a, b)
                return "mended"

        self.down.add(target)
        fault = Fault(round(self.now(), 1), time.time(), kind, target, heal_at, undo, notes=notes)
        self.faults.append(fault)
        print(f"{fault.at:7.1f} s  {kind}: {target} ({'; '.join(notes)})", flush=True)
        return fault

    def heal(self, fault: Fault) -> None:
        fault.notes.append(f"{fault.undo()} after {self.now() - fault.at:.0f} s")
        self.down.discard(fault.target)
        fault.healed = True
        print(f"{self.now():7.1f} s  healed {fault.target}", flush=True)

    def watch(self) -> None:
        """Note a failover's end; start again, and count, a process that exited by itself."""
        if self.failover:
            old, killed_at = self.failover
            new = self.net.primary()
            if new not in (None, old):
                seconds = time.monotonic() - killed_at
                self.faults[-1].notes.append(f"the sentinels named a new primary after {seconds:.1f} s")
                self.failover = None
        for number, worker in enumerate(self.workers):
            name = f"worker-{number + 1}"
            if name not in self.down and worker.proc.poll() is not None:
                self.unplanned.append(f"{self.now():.0f} s: {name} exited by itself ({worker.proc.returncode})")
                print(f"{self.now():7.1f} s  {self.unplanned[-1]}", flush=True)
                self.workers[number] = self.start_worker(number)
        for broker in self.net.brokers:
            if broker.name not in self.down and any(p.poll() is not None for p in (broker.redis, broker.sentinel)):
                self.unplanned.append(f"{self.now():.0f} s: a process of {broker.name} exited by itself")
                print(f"{self.now():7.1f} s  {self.unplanned[-1]}", flush=True)
                broker.kill()
                broker.start()

    def processes(self, sender: Service) -> dict[str, int]:
        named = {"web (sender)": sender.proc.pid}
        named |= {f"worker-{n + 1}": w.proc.pid for n, w in enumerate(self.workers) if w.proc.poll() is None}
        for broker in self.net.brokers:
            named |= broker.pids()
        return named


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the steady load, and of the faults")
    parser.add_argument("--rate", type=float, default=20.0, help="tasks sent a second")
    parser.add_argument("--seed", type=int, default=None, help="repeat a run's random choices")
    args = parser.parse_args()
    if reason := netns_available():
        print(f"chaos: the hosts are network namespaces, and {reason}; run as root", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    count = int(args.rate * args.minutes * 60)
    venv = project_venv()
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp, postgres_database("cdc_chaos") as database_url:
        tmp = Path(tmp)
        project = render(tmp / "project", VARIANTS["redis"])
        shutil.copytree(FAULT_APP, project / "faultlab", ignore=shutil.ignore_patterns("__pycache__"))
        (project / ".env").unlink()  # settings from the environment only, as in production
        net = ChaosNet(tmp / "net")
        chaos, sender = None, None
        try:
            net.start()
            env = project_env(
                venv,
                DJANGO_SETTINGS_MODULE="faultlab.settings",
                TASK_MAX_COUNTDOWN=str(MAX_COUNTDOWN),
                DATABASE_URL=database_url,
                CELERY_BROKER_URL=net.url(0),
                CELERY_RESULT_BACKEND=net.url(1),
                **net.env,
            )
            lab = Lab("redis", project, database_url, tmp / "logs", env)
            run(["python", "manage.py", "migrate", "--no-input", "-v0"], project, env)
            chaos = Chaos(net, lab, env | {"DATABASE_URL": net.database_url(database_url)}, random.Random(seed))
            chaos.workers = [chaos.start_worker(number) for number in range(len(net.worker_hosts))]
            for worker in chaos.workers:
                worker.wait_for_log(rf"{QUEUE}@\S+ ready\.", timeout=120)

            say(f"# Chaos, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
            say()
            say(
                f"Three broker hosts (redis-server and sentinel each: one primary, two replicas), "
                f"{len(chaos.workers)} worker hosts, the web and PostgreSQL on a seventh; {os.cpu_count()} CPUs. "
                f"{args.rate:g} tasks/s of {TASK_SECONDS} s each for {args.minutes:g} min ({count} tasks); "
                f"a fault every {INTERVAL[0]} to {INTERVAL[1]} s, healed after {HEAL[0]} to {HEAL[1]} s; "
                f"seed {seed}."
            )
            say()
            command = ["python", "manage.py", "faultlab_send", BATCH, "--count", str(count), "--rate", str(args.rate)]
            command += ["--seconds", str(TASK_SECONDS), "--ignore-result", "--patient", "120"]
            sender = start("sender", command, project, env, lab.logdir)
            chaos.began = time.monotonic()
            load = [os.getloadavg()[0]]
            end = args.minutes * 60
            snapshots, memory_at = {"start": 10.0, "end": end - 10}, {}
            next_fault = chaos.rng.uniform(*INTERVAL)
            while sender.proc.poll() is None and chaos.now() < end + 300:
                for when, at in snapshots.items():
                    if when not in memory_at and chaos.now() >= at:
                        memory_at[when] = memory(chaos.processes(sender))
                for fault in chaos.faults:
                    if not fault.healed and chaos.now() >= fault.heal_at:
                        chaos.heal(fault)
                if chaos.now() >= next_fault and chaos.now() < end - HEAL[1]:
                    chaos.inject()
                    next_fault = chaos.now() + chaos.rng.uniform(*INTERVAL)
                chaos.watch()
                time.sleep(0.5)
            for fault in chaos.faults:  # the sender may finish first
                if not fault.healed:
                    chaos.heal(fault)
            if sender.proc.poll() is None:
                raise SystemExit(f"the sender did not finish in time:\n{sender.output()[-2000:]}")
            if sender.proc.returncode != 0:
                raise SystemExit(f"the sender gave up:\n{sender.output()[-3000:]}")
            sending = last_json(sender.output())
            sent = sending["accepted"]
            sending_minutes = chaos.now() / 60
            load.append(os.getloadavg()[0])

            drained_at = time.monotonic()
            lab.wait_drained(BATCH, sent, timeout=300)
            drained = time.monotonic() - drained_at
            chaos.watch()
            figures = lab.stats(BATCH, sent)
            completion_gap = lab.completion_gap(BATCH)
            # Each fault's own: from just before it (the gap that spans it) to the next.
            ends = [fault.wall for fault in chaos.faults[1:]] + [time.time()]
            fault_gaps = [
                lab.completion_gap(BATCH, f.wall - 1, until) for f, until in zip(chaos.faults, ends, strict=True)
            ]
            final_state = net.describe()
        finally:
            if chaos:
                for worker in chaos.workers:
                    worker.stop(timeout=60)
            if sender and sender.proc.poll() is None:
                sender.kill()
            net.close()

    kinds = {kind: sum(1 for f in chaos.faults if f.kind == kind) for kind in KINDS}
    say(
        f"- sent {sent} in {sending_minutes:.1f} min; {sending['refused']} publishes refused and retried; "
        f"the backlog drained {drained:.0f} s after the last send; "
        f"load average {load[0]:.1f} as it began, {load[1]:.1f} as it ended"
    )
    say(
        f"- longest time without an accepted publish: {sending['longest_gap']} s; "
        f"without a completed task: {completion_gap} s"
    )
    say(f"- faults: {len(chaos.faults)} ({', '.join(f'{n} {kind}' for kind, n in kinds.items())})")
    say(f"- processes that exited by themselves: {len(chaos.unplanned)}" + "".join(f"; {u}" for u in chaos.unplanned))
    say()
    say("| tasks sent | completed | lost | duplicate deliveries | absorbed | cut short |")
    say("|---|---|---|---|---|---|")
    say(
        f"| {figures['sent']} | {figures['completed']} | {figures['lost']} | {figures['duplicates']} | "
        f"{figures['absorbed']} | {figures['interrupted']} |"
    )
    say()
    say("| at | fault | target | what happened | longest gap between two completions, to the next fault |")
    say("|---|---|---|---|---|")
    for fault, gap in zip(chaos.faults, fault_gaps, strict=True):
        say(f"| {fault.at:.0f} s | {fault.kind} | {fault.target} | {'; '.join(fault.notes)} | {gap} s |")
    say()
    for row in memory_table(memory_at):
        say(row)
    say()
    say(
        "Start: 10 s into the load; end: 10 s before it ended. A process killed by a fault and started "
        "again is another process at the end; pool children are numbered by their order."
    )
    say()
    say("Brokers at the end:")
    say()
    say("```")
    say("\n".join(line for line in final_state.splitlines() if not line.startswith("  sentinel:")))
    say("```")
    CACHE.mkdir(exist_ok=True)
    (CACHE / "chaos-report.md").write_text("\n".join(lines) + "\n")
    summary = {**figures, **sending, "faults": kinds, "unplanned": len(chaos.unplanned), "seed": seed}
    print(json.dumps(summary))
    return 1 if figures["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
