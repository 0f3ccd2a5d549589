"""Where workload 5's slow tasks come from: .delay()-to-start latency at a fixed
rate, for the generated defaults, cookiecutter-django's settings (the suite's
reference) and the generated defaults with pool children replaced every 1,000
tasks (what the template did before). Prints, for each run, the p50 and p99,
the slowest tasks and when each pool child took its first task: a child that
appears mid-run replaced one. Asserts nothing.

    .venv/bin/python benchmarks/tail_latency.py [--rounds 3] [--preload 2500] [--rate 100] [--seconds 10]

The worker is the suite's (the Procfile's worker-default line at concurrency 2);
before the timed run it drains --preload no-op tasks, as it has in the suite by
workload 5, so that children are as old as they would be there. Uses the suite's
bench app and services (benchmarks/suite.py). See docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
from pathlib import Path

import suite
from suite import FULL, QUEUE, ROOT, Bench, worker_command

RECYCLED = "bench.profiles.x_recycled"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--preload", type=int, default=2500, help="no-op tasks drained before the timed run")
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--template", type=Path, default=ROOT)
    args = parser.parse_args()
    suite.PROFILES["recycled"] = {"module": RECYCLED, "prefetch": None}
    profiles = ["generated", "reference", "recycled"]
    p99s: dict[str, list[float]] = {name: [] for name in profiles}
    with tempfile.TemporaryDirectory(prefix="tail-") as tmp, contextlib.ExitStack() as stack:
        bench = Bench(Path(tmp), args.template.resolve(), FULL)
        (bench.project / "bench" / "profiles" / "x_recycled.py").write_text(
            "from bench.profiles.generated import *  # noqa: F403\n\nCELERY_WORKER_MAX_TASKS_PER_CHILD = 1000\n"
        )
        bench.setup(stack)
        for round_number in range(args.rounds):
            for name in profiles[round_number % 3 :] + profiles[: round_number % 3]:
                bench.r.flushall()
                bench.bench(name, "probe", QUEUE)
                command = worker_command(bench.project, suite.PROFILES[name]["prefetch"])
                worker = bench.start(f"worker-{name}-{round_number}", command, bench.profile_env(name))
                bench.wait_until(bench.broker_empty, "the probe task", 120, worker)
                if args.preload:
                    bench.bench(name, "enqueue", "accumulate", args.preload)
                    bench.wait_until(bench.broker_empty, "the preload", 300, worker)
                result = bench.bench(name, "latency", args.rate, args.seconds)
                bench.stop(worker)
                p99s[name].append(result["p99"] * 1000)
                slowest = ", ".join(f"{s['ms']:.0f} ms at {s['sent_at_s']:.2f} s" for s in result["slowest"][::-1][:6])
                children = ", ".join(f"{at:.2f} s" for at in sorted(result["children"].values()))
                print(f"round {round_number + 1} {name:9} p50 {result['p50'] * 1000:5.1f} ms  "
                      f"p99 {result['p99'] * 1000:6.1f} ms | slowest: {slowest} | children's first tasks: {children}",
                      flush=True)  # fmt: skip
    print(f"\n{args.rate:.0f} tasks/s for {args.seconds:.0f} s after {args.preload} no-op tasks, medians of "
          f"{args.rounds} rounds:\n")  # fmt: skip
    print("| profile | p99 (ms) | p99 / generated |")
    print("|---|---|---|")
    base = statistics.median(p99s["generated"])
    for name in profiles:
        p99 = statistics.median(p99s[name])
        print(f"| {name} | {p99:.1f} | {p99 / base:.2f} |")


if __name__ == "__main__":
    main()
