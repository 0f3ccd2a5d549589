"""Enqueue and drain rates of a generated project's worker. Prints figures.

    .venv/bin/python benchmarks/throughput.py [--tasks 5000] [--concurrency 2] [--results none]
                                              [--kombu-transport]

Renders a Redis-broker project, starts a private redis-server and one prefork
worker on the default queue with the generated production settings (late acks,
prefetch 1), sends no-op tasks (`celery.accumulate`) and times both sides.
--kombu-transport deletes the project's TRANSPORT_ALIASES line, so workers take
messages with kombu's BRPOP instead of ops/transport.py's BLMOVE and claim script.
See docs/benchmarks.md.
"""

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers import PrivateRedis, project_env, project_venv, render, run, start  # noqa: E402

SEND = """
import os, sys, time
import django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()
from config.celery import app
n = int(sys.argv[1])
started = time.perf_counter()
with app.producer_or_acquire() as producer:
    for i in range(n):
        app.send_task("celery.accumulate", args=[i], queue="default", producer=producer)
print(time.perf_counter() - started)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--results", choices=["none", "redis", "django-db"], default="none")
    parser.add_argument("--kombu-transport", action="store_true", help="kombu's BRPOP, not ops/transport.py")
    args = parser.parse_args()

    venv = project_venv()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        answers = {"database": "sqlite", "result_backend": args.results, "queues": f"default:{args.concurrency}"}
        project = render(tmp / "project", answers)
        if args.kombu_transport:
            celery_py = project / "config" / "celery.py"
            lines = celery_py.read_text().splitlines(keepends=True)
            celery_py.write_text("".join(line for line in lines if not line.startswith("TRANSPORT_ALIASES")))
        redis = PrivateRedis(tmp / "redis", appendonly=False).start()
        try:
            env = project_env(
                venv,
                CELERY_BROKER_URL=f"{redis.url}/0",
                CELERY_RESULT_BACKEND=f"{redis.url}/1",
                DATABASE_URL=f"sqlite:///{project}/db.sqlite3",
                FLOWER_USER="x",
                FLOWER_PASSWORD="x",
            )
            if args.results != "redis":
                env.pop("CELERY_RESULT_BACKEND")
            run(["python", "manage.py", "migrate", "-v0"], project, env)
            (project / "send.py").write_text(SEND)
            sent = run(["python", "send.py", str(args.tasks)], project, env)
            elapsed = float(sent.stdout.strip().splitlines()[-1])
            import redis as redis_py

            client = redis_py.Redis(port=redis.port, db=0)
            backlog = client.llen("default")
            worker = start(
                "worker",
                ["celery", "-A", "config", "worker", "-Q", "default", "-c", str(args.concurrency), "-P", "prefork",
                 "--loglevel", "WARNING", "--without-mingle", "--without-gossip"],
                project, env, tmp / "logs",
            )  # fmt: skip
            began = time.perf_counter()
            while client.llen("default") or client.llen("unacked_landing:default") or client.hlen("unacked"):
                time.sleep(0.05)
                if worker.proc.poll() is not None:
                    raise SystemExit(worker.output()[-3000:])
            drained = time.perf_counter() - began
            worker.stop()
        finally:
            redis.stop()
            shutil.rmtree(tmp / "redis", ignore_errors=True)
    transport = "kombu's BRPOP" if args.kombu_transport else "ops/transport.py (BLMOVE)"
    print(f"{args.tasks} no-op tasks, prefork concurrency {args.concurrency}, results: {args.results}, {transport}")
    print(f"  enqueue: {args.tasks / elapsed:,.0f} tasks/s ({backlog} queued)")
    print(f"  drain:   {args.tasks / drained:,.0f} tasks/s (worker start-up included)")


if __name__ == "__main__":
    main()
