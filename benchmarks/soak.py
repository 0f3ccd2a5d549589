"""Soak: a generated project's workers under steady load for a while. Not in CI.

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--workers 2] [--max-tasks-per-child 50]

Renders the default variant (Redis broker with ops/transport.py, django-db
results on PostgreSQL), adds the fault tests' `faultlab` app (its task records
its key once, idempotently, and logs every delivery: tests/fault_app), and
starts `--workers` workers of the default queue from the Procfile's own command
line, with `--max-tasks-per-child` appended so that pool children are recycled.

1. Measures the drain rate: a burst of `--burst` tasks, timed until recorded.
2. Sends at `--load` (0.8) of that rate for `--minutes`; halfway through, the
   first worker gets SIGTERM (warm shutdown) and is started again.
3. Waits for the queue to drain, then reports tasks sent, done (keys recorded),
   lost (never recorded: must be 0), duplicate deliveries and how many of them
   the idempotent write absorbed, the backlog over time, and the memory (PSS,
   /proc/PID/smaps_rollup) of every process at the start and at the end.

Exits 1 when a task was lost. Writes the report to .cache/soak-report.md too.
See docs/reliability.md ("Soak").
"""

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis as redis_py

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_faults import FAULT_APP, QUEUE, Lab  # noqa: E402

from helpers import (  # noqa: E402
    CACHE,
    PrivateRedis,
    Service,
    postgres_database,
    procfile,
    project_env,
    project_venv,
    render,
    run,
    start,
)

# Sends `count` faultlab.record tasks at `rate` per second; prints how many it sent.
SEND = """
import os, sys, time
import django
django.setup()
from config.celery import app
from faultlab.tasks import record
batch, rate, count = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
started, sent = time.monotonic(), 0
with app.producer_or_acquire() as producer:
    for number in range(count):
        if rate:
            time.sleep(max(0.0, started + number / rate - time.monotonic()))
        key = f"{batch}-{number:06d}"
        record.apply_async((key,), task_id=key, producer=producer)
        sent += 1
print(sent, time.monotonic() - started)
"""


def pss_kib(pid: int) -> int | None:
    """Proportional set size of a process, in KiB; None once it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return None


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    with contextlib.suppress(OSError):
        return [int(child) for child in path.read_text().split()]
    return []


def memory(processes: dict[str, int]) -> dict[str, int]:
    """{process name: PSS in KiB} of the named processes and of each worker's pool children."""
    figures = {}
    for name, pid in processes.items():
        if (pss := pss_kib(pid)) is not None:
            figures[name] = pss
        for number, child in enumerate(sorted(children(pid)) if name.startswith("worker") else []):
            if (pss := pss_kib(child)) is not None:
                figures[f"{name}, child {number + 1}"] = pss
    return figures


def memory_table(memory_at: dict[str, dict[str, int]]) -> list[str]:
    """The Markdown table of two memory() snapshots, "start" and "end": a row a
    process, "—" where it was not running."""
    at_start, at_end = memory_at.get("start", {}), memory_at.get("end", {})
    rows = ["| process | PSS at start (MiB) | PSS at end (MiB) |", "|---|---|---|"]
    for name in sorted(at_start.keys() | at_end.keys()):
        start_mib = f"{at_start[name] / 1024:.1f}" if name in at_start else "—"
        end_mib = f"{at_end[name] / 1024:.1f}" if name in at_end else "—"
        rows.append(f"| {name} | {start_mib} | {end_mib} |")
    return rows


@dataclass
class Soak(Lab):
    """The fault tests' Lab (faultlab's counts), with numbered workers and a paced sender."""

    max_tasks_per_child: int = 50
    restarts: int = 0

    def start_worker(self, number: int) -> Service:
        """The Procfile's worker line, as honcho runs it, with children recycled."""
        command = procfile(self.project)[f"worker-{QUEUE}"] + f" --max-tasks-per-child {self.max_tasks_per_child}"
        if number:  # a second worker of the queue, as on a second host
            command += f" -n {QUEUE}-{number + 1}@%h"
        name = f"worker-{number + 1}-{self.restarts}"
        worker = start(name, ["sh", "-c", f"exec {command}"], self.project, self.env, self.logdir)
        worker.wait_for_log(r"@\S+ ready\.", timeout=120)
        return worker

    def send(self, batch: str, rate: float, count: int) -> Service:
        command = ["python", "soak_send.py", batch, str(rate), str(count)]
        return start(f"send-{batch}", command, self.project, self.env, self.logdir)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the steady load")
    parser.add_argument("--workers", type=int, default=2, help="workers of the default queue")
    parser.add_argument("--max-tasks-per-child", type=int, default=50)
    parser.add_argument("--burst", type=int, default=1000, help="tasks that measure the drain rate")
    parser.add_argument("--load", type=float, default=0.8, help="fraction of the drain rate to send at")
    args = parser.parse_args()

    venv = project_venv()
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    with tempfile.TemporaryDirectory(prefix="soak-") as tmp, postgres_database("cdc_soak") as database_url:
        tmp = Path(tmp)
        project = render(tmp / "project", {})
        shutil.copytree(FAULT_APP, project / "faultlab", ignore=shutil.ignore_patterns("__pycache__"))
        (project / ".env").unlink()  # settings from the environment only, as in production
        (project / "soak_send.py").write_text(SEND)
        redis = PrivateRedis(tmp / "redis").start()
        env = project_env(
            venv,
            DJANGO_SETTINGS_MODULE="faultlab.settings",
            DATABASE_URL=database_url,
            CELERY_BROKER_URL=f"{redis.url}/0",
        )
        soak = Soak("redis", project, database_url, tmp / "logs", env, max_tasks_per_child=args.max_tasks_per_child)
        try:
            run(["python", "manage.py", "migrate", "--no-input", "-v0"], project, env)
            soak.workers = [soak.start_worker(number) for number in range(args.workers)]

            # 1. The drain rate, measured on a burst.
            began = time.monotonic()
            sender = soak.send("burst", 0, args.burst)
            done = soak.wait_recorded("burst", args.burst, timeout=600)
            drain = done / (time.monotonic() - began)
            sender.proc.wait(60)
            rate = args.load * drain
            count = int(rate * args.minutes * 60)
            say(f"# Soak, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
            say()
            say(
                f"{args.workers} workers of the Procfile's `worker-{QUEUE}` line with "
                f"`--max-tasks-per-child {args.max_tasks_per_child}`; {os.cpu_count()} CPUs."
            )
            say(f"- drain rate, measured on {args.burst} tasks sent at once: {drain:.0f} tasks/s")
            say(f"- load: {args.load:.0%} of it, {rate:.0f} tasks/s for {args.minutes:g} min ({count} tasks)")

            # 2. Steady load, one warm restart halfway; memory 10 s in and 10 s before the end.
            began = time.monotonic()
            end = began + args.minutes * 60
            sender = soak.send("soak", rate, count)
            snapshots, memory_at, backlog, restart = {"start": began + 10, "end": end - 10}, {}, [], None
            load = [os.getloadavg()[0]]
            client = redis_py.Redis(port=redis.port, db=0)
            next_sample = began
            while sender.proc.poll() is None and time.monotonic() < end + 300:
                now = time.monotonic()
                if now >= next_sample:
                    backlog.append((round((now - began) / 60, 1), client.llen(QUEUE)))
                    next_sample = now + 30
                for when, at in snapshots.items():
                    if when not in memory_at and now >= at:
                        processes = {"redis-server": redis.proc.pid, "sender": sender.proc.pid}
                        processes |= {f"worker {n + 1}": w.proc.pid for n, w in enumerate(soak.workers)}
                        memory_at[when] = memory(processes)
                if restart is None and now >= began + args.minutes * 30:
                    stopping = time.monotonic()
                    code = soak.workers[0].stop(timeout=120)
                    stopped = time.monotonic() - stopping
                    soak.restarts += 1
                    soak.workers[0] = soak.start_worker(0)
                    restart = (round((stopping - began) / 60, 1), code, stopped, time.monotonic() - stopping)
                time.sleep(1)
            load.append(os.getloadavg()[0])
            if sender.proc.poll() is None:
                raise SystemExit(f"the sender did not finish in time:\n{sender.output()[-2000:]}")
            sent, sending = (float(value) for value in sender.output().split()[-2:])
            sent = int(sent)

            # 3. Drain, then count.
            drained_at = time.monotonic()
            soak.wait_recorded("soak", sent, timeout=600)
            drained = time.monotonic() - drained_at
            burst, steady = soak.stats("burst", args.burst), soak.stats("soak", sent)
            for batch, figures in (("burst", burst), ("soak", steady)):
                figures["pool processes"] = len({row[1] for row in soak.attempts(batch)})
        finally:
            for worker in soak.workers:
                worker.stop(timeout=120)
            redis.stop()

    say(
        f"- sent {sent} in {sending / 60:.1f} min ({sent / sending:.0f} tasks/s); "
        f"load average {load[0]:.1f} as it began, {load[1]:.1f} as it ended"
    )
    if restart:
        minute, code, stopped, back = restart
        say(
            f"- worker 1 restarted at minute {minute}: SIGTERM, warm shutdown in {stopped:.1f} s "
            f"(exit code {code}), serving again {back:.1f} s after the signal"
        )
    say(f"- backlog after sending stopped: drained in {drained:.1f} s")
    say()
    say("| tasks | sent | done | lost | duplicate deliveries | absorbed | cut short | pool processes used |")
    say("|---|---|---|---|---|---|---|---|")
    for name, figures in (("drain-rate burst", burst), ("steady load", steady)):
        say(
            f"| {name} | {figures['sent']} | {figures['completed']} | {figures['lost']} | {figures['duplicates']} | "
            f"{figures['absorbed']} | {figures['interrupted']} | {figures['pool processes']} |"
        )
    say()
    say("Backlog (messages waiting in the queue), every 30 s: " + ", ".join(f"{m} min: {n}" for m, n in backlog))
    say()
    for row in memory_table(memory_at):
        say(row)
    say()
    say(
        "Start: 10 s into the load; end: 10 s before it ended. Worker 1 at the end is the restarted "
        "process, and pool children are recycled: a child row compares two processes of the same slot."
    )
    CACHE.mkdir(exist_ok=True)
    (CACHE / "soak-report.md").write_text("\n".join(lines) + "\n")
    return 1 if burst["lost"] or steady["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
