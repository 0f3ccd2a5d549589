"""What each tuning choice of the generated defaults is worth: workload 1 of the
suite (no-op tasks, enqueue then drain) for the generated project as rendered,
and for the same project with one choice undone at a time. Prints a table of
medians and ratios to the generated profile. Asserts nothing.

    .venv/bin/python benchmarks/ablations.py [--tasks 3000] [--rounds 3] [--template PATH]

Profiles are settings modules written into one rendered project (`from
config.settings import *`, then one change), selected with
DJANGO_SETTINGS_MODULE; "without hiredis" runs in a second virtualenv, the
shared one less hiredis. The worker is the Procfile's `worker-default` line at
concurrency 2; a profile that sets a prefetch replaces the line's
`--prefetch-multiplier`. Enqueue is timed with no worker running; the drain is
timed from the worker's first taken message (start-up excluded) until the
queue, its landing list and the unacked hash are empty. Profiles alternate
within each round. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers import (  # noqa: E402
    CACHE,
    PROJECT_REQUIREMENTS,
    ROOT,
    PrivateRedis,
    postgres_database,
    procfile,
    project_env,
    project_venv,
    render,
    run,
    start,
)

KOMBU_TRANSPORT = (
    'from kombu.transport import TRANSPORT_ALIASES\nTRANSPORT_ALIASES.update(redis="kombu.transport.redis:Transport")\n'
)

# name -> (what is undone, settings appended to config/settings.py's, venv)
PROFILES = {
    "generated": ("nothing: as rendered", "", "shared"),
    "results stored": ("every result stored (django-db)", "CELERY_TASK_IGNORE_RESULT = False\n", "shared"),
    "events on": (
        "worker and sent events on",
        "CELERY_WORKER_SEND_TASK_EVENTS = True\nCELERY_TASK_SEND_SENT_EVENT = True\n",
        "shared",
    ),
    "prefetch 1": ("prefetch multiplier 1", "CELERY_WORKER_PREFETCH_MULTIPLIER = 1\n", "shared"),
    "prefetch 16": ("prefetch multiplier 16", "CELERY_WORKER_PREFETCH_MULTIPLIER = 16\n", "shared"),
    "without hiredis": ("redis-py's Python reply parser", "", "no-hiredis"),
    "recycled": ("pool children replaced every 1,000 tasks", "CELERY_WORKER_MAX_TASKS_PER_CHILD = 1000\n", "shared"),
    "kombu transport": ("kombu's BRPOP transport instead of ops/transport.py", KOMBU_TRANSPORT, "shared"),
}

SEND = """
import os, sys, time
import django
django.setup()
from config.celery import app
n = int(sys.argv[1])
task = app.tasks["celery.accumulate"]
started = time.perf_counter()
for i in range(n):
    task.delay(i)  # a producer from the app's pool per call, as a web request takes one
print(time.perf_counter() - started)
"""


def venv_without_hiredis() -> Path:
    """The shared virtualenv's requirements with redis-py's Python parser only."""
    requirements = [r.replace("redis[hiredis]", "redis") for r in PROJECT_REQUIREMENTS]
    digest = hashlib.sha1("\n".join(requirements).encode()).hexdigest()[:12]
    venv = CACHE / f"venv-nohiredis-{digest}"
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
        subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
        subprocess.run([uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), *requirements],
                       check=True)  # fmt: skip
        (venv / ".complete").touch()
    return venv


def worker_command(project: Path, settings: str) -> list[str]:
    line = procfile(project)["worker-default"]
    line = re.sub(r"(?<!\S)-c\s+\S+", "-c 2", line)
    if "PREFETCH" in settings:
        line = re.sub(r"\s--prefetch-multiplier\s+\S+", "", line)
    return line.split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--template", type=Path, default=ROOT)
    args = parser.parse_args()
    import redis as redis_py

    venvs = {"shared": project_venv(), "no-hiredis": venv_without_hiredis()}
    figures = {name: {"enqueue": [], "drain": []} for name in PROFILES}
    with tempfile.TemporaryDirectory() as tmp, postgres_database("ablate") as database:
        tmp = Path(tmp)
        project = render(tmp / "project", {}, src=args.template)
        (project / "send.py").write_text(SEND)
        modules = {}
        for index, (name, (_, settings, _)) in enumerate(PROFILES.items()):
            modules[name] = f"config.ablation_{index}"
            (project / "config" / f"ablation_{index}.py").write_text(
                "from config.settings import *  # noqa: F403\n\n" + settings
            )
        redis = PrivateRedis(tmp / "redis", appendonly=False).start()
        client = redis_py.Redis(port=redis.port)
        try:
            common = {"CELERY_BROKER_URL": f"{redis.url}/0", "DATABASE_URL": database}
            run(["python", "manage.py", "migrate", "-v0"], project, project_env(venvs["shared"], **common))
            for round_number in range(args.rounds):
                names = list(PROFILES)
                names = names[round_number % len(names) :] + names[: round_number % len(names)]
                for name in names:
                    _, settings, venv = PROFILES[name]
                    env = project_env(venvs[venv], DJANGO_SETTINGS_MODULE=modules[name], **common)
                    client.flushall()
                    sent = run(["python", "send.py", str(args.tasks)], project, env)
                    enqueue = args.tasks / float(sent.stdout.strip().splitlines()[-1])
                    worker = start(f"worker-{round_number}-{len(figures[name]['drain'])}",
                                   worker_command(project, settings), project, env, tmp / "logs")  # fmt: skip
                    while client.llen("default") >= args.tasks:
                        time.sleep(0.002)
                        if worker.proc.poll() is not None:
                            raise SystemExit(worker.output()[-3000:])
                    began = time.perf_counter()
                    while client.llen("default") or client.llen("unacked_landing:default") or client.hlen("unacked"):
                        time.sleep(0.01)
                    drain = args.tasks / (time.perf_counter() - began)
                    if worker.stop() != 0:
                        raise SystemExit(f"{name}: the worker did not stop cleanly\n{worker.output()[-3000:]}")
                    figures[name]["enqueue"].append(enqueue)
                    figures[name]["drain"].append(drain)
                    print(f"round {round_number + 1} {name:16} enqueue {enqueue:6.0f}/s  drain {drain:6.0f}/s",
                          flush=True)  # fmt: skip
        finally:
            redis.stop()

    base = {k: statistics.median(v) for k, v in figures["generated"].items()}
    print(f"\n{args.tasks} no-op tasks, prefork concurrency 2, {args.rounds} rounds, medians:\n")
    print("| profile | what is undone | enqueue (tasks/s) | drain (tasks/s) | enqueue/generated | drain/generated |")
    print("|---|---|---|---|---|---|")
    for name, (undone, _, _) in PROFILES.items():
        enqueue, drain = (statistics.median(figures[name][k]) for k in ("enqueue", "drain"))
        print(f"| {name} | {undone} | {enqueue:,.0f} | {drain:,.0f} | "
              f"{enqueue / base['enqueue']:.2f} | {drain / base['drain']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
