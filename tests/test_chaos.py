"""The chaos run's short form: benchmarks/chaos.py for 2 minutes must lose nothing.

The script is the test: three worker hosts and a replicated Redis (one
primary, two replicas, three sentinels) under steady load, a worker, a broker
host or a link failing every 20 to 40 s (tests/chaoslab). Its long form, for
10 minutes or more, is run by hand; one run's output is in docs/reliability.md.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import ROOT

MINUTES = 2


@pytest.mark.boot
@pytest.mark.xdist_group("chaos")
def test_two_minutes_of_chaos_lose_nothing(namespaces):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "chaos.py"), "--minutes", str(MINUTES)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = proc.stdout + proc.stderr
    print(proc.stdout)
    last = proc.stdout.strip().splitlines()[-1:]
    assert last and last[0].startswith("{"), f"the chaos run ended early:\n{output[-6000:]}"
    summary = json.loads(last[0])
    # A fault every 20 to 40 s, none in the last 15 s: two at least, of two kinds.
    assert sum(summary["faults"].values()) >= 2, summary
    assert summary["lost"] == 0 and summary["completed"] == summary["sent"], output[-6000:]
    assert summary["duplicates"] <= summary["absorbed"] + summary["interrupted"], summary
    # No worker, redis-server or sentinel died but by a fault's hand.
    assert summary["unplanned"] == 0, output[-6000:]
    assert proc.returncode == 0, output[-4000:]
