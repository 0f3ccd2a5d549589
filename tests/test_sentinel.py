"""Redis Sentinel: the primary dies mid-batch, a replica takes over, nothing is lost.

Booted like tests/test_faults.py (its Lab, faultlab app and small time limits),
against tests/sentinellab: one primary, one replica and three sentinels. The
project reaches them by its sentinel:// URLs, for the broker and the result
backend, through ops/transport.py's SentinelTransport.

Once the sentinels have promoted the replica, the killed primary starts
again, as its supervisor (systemd, Kubernetes) would restart it, and rejoins
as a replica: until then, a durable publish has no replica to wait for.

A sender publishes at a steady pace, faster than the worker runs the tasks, so
that a backlog waits on the primary when it is SIGKILLed. A refused publish is
tried again, as a client retries a 503. Each case reports sent, completed, lost
and duplicates, the failover time, and the longest gaps between two accepted
publishes (web) and two completed tasks (workers).

Redis replicates asynchronously: the messages the primary acknowledged but had
not yet passed on die with it. On loopback that window lasts microseconds; the
"lagging" cases silence the replication link half a second before the kill, as
a congested network would, so that it can be seen. Durable publishing (WAIT for
a replica, on by default with Sentinel: BROKER_PUBLISH_REPLICAS) must lose
nothing there; without it, the lagging case must lose messages, or the set-up
did not open the window it claims to.
"""

from __future__ import annotations

import time

import pytest
import test_faults
from sentinellab import Sentinels
from test_faults import report

from helpers import flower_queue_lengths, free_port, wait_for_port, wait_until

fault_projects, lab_for = test_faults.fault_projects, test_faults.lab_for

SENT, RATE, TASK_SECONDS = 500, 100, 0.1
CASES = {
    # id: (Redis replicas, lagging replica, BROKER_PUBLISH_REPLICAS; None = the project's default)
    "defaults": (1, False, None),
    "no-wait": (1, False, "0"),
    "lagging": (1, True, None),
    "lagging-no-wait": (1, True, "0"),
    # A replica is left after the failover: durable publishes need not wait for the old primary.
    "two-replicas": (2, False, None),
}


@pytest.mark.boot
@pytest.mark.xdist_group("sentinel")
@pytest.mark.parametrize("case", list(CASES))
def test_primary_killed_mid_batch(lab_for, tmp_path, case):
    followers, lagging, replicas = CASES[case]
    started = time.monotonic()
    sentinels = Sentinels(tmp_path / "sentinels", replicas=followers)
    try:
        sentinels.start()
        lab = lab_for("redis", sentinels=sentinels)
        if replicas is not None:
            lab.env["BROKER_PUBLISH_REPLICAS"] = replicas
        batch = f"sentinel-{case}"
        lab.ready(lab.start_worker())
        sender = lab.send_steadily(batch, SENT, RATE, TASK_SECONDS)
        assert lab.wait_recorded(batch, 50, timeout=60) >= 50
        if lagging:
            sentinels.lag()
            time.sleep(0.5)
        sentinels.kill_primary()
        failover = sentinels.wait_failover()
        # Without a replica, no durable publish succeeds: the old primary comes
        # back as one, as systemd or Kubernetes would restart it.
        sentinels.restart_old_primary()
        sending = lab.finish_sending(sender, SENT)
        lab.wait_drained(batch, SENT, timeout=120)
        figures = lab.stats(batch, SENT)
        worker_gap = lab.completion_gap(batch)
        # For a failure's message, while the broker still answers: where the
        # missing keys went, the servers' roles and the worker's last lines.
        missing = lab.diagnosis(batch, SENT) if figures["lost"] else ""
        state = f"{missing}\n{sentinels.describe()}\n{lab.workers[-1].output()[-4000:]}"
    finally:
        sentinels.stop()
    durable = replicas != "0"
    notes = (
        f"{followers} replica(s){', the replication link silenced 0.5 s before the kill' if lagging else ''}; "
        f"durable publishing {'on (default)' if durable else 'off'}; failover {failover:.1f} s; "
        f"longest gap: publishes {sending['longest_gap']} s, completions {worker_gap} s; "
        f"{sending['refused']} publishes refused and retried"
    )
    report("Redis Sentinel: primary SIGKILL mid-batch", f"redis sentinel, {case}", figures, notes, started)
    print(f"{case}: {figures}; {notes}")
    # The backlog was still on the primary: the kill tested the failover.
    assert figures["duplicates"] <= figures["absorbed"] + figures["interrupted"], figures
    if durable:
        assert figures["lost"] == 0, f"{figures}\n{state}"
    elif lagging:
        assert figures["lost"] > 0, f"the lag opened no window: nothing acknowledged was lost ({figures})"


@pytest.mark.boot
@pytest.mark.xdist_group("sentinel")
def test_flower_counts_the_queue_on_whichever_node_is_primary(lab_for, tmp_path):
    """Flower reads the queues' lengths with a Redis client of its own, which
    asks the sentinels for the primary (flower.utils.broker.RedisSentinel, with
    the project's REDIS_SENTINEL options): a backlog it counts before a
    failover, it counts on the new primary after it."""
    sentinels = Sentinels(tmp_path / "sentinels")
    try:
        sentinels.start()
        lab = lab_for("redis", sentinels=sentinels)
        port, user, password = free_port(), "flower", "flower-sentinel-password"
        auth = f"{user}:{password}"
        lab.env |= {"FLOWER_PORT": str(port), "FLOWER_DB": str(tmp_path / "flower.db")}
        lab.env |= {"FLOWER_USER": user, "FLOWER_PASSWORD": password}
        lab.ready(lab.start_worker())
        flower = lab.start_worker("flower")
        wait_for_port(port, timeout=60, proc=flower.proc)
        # A backlog of a minute: 4 pool processes, 2 s a task.
        lab.send("flower-backlog", 120, seconds=2)

        def counted() -> int:
            return flower_queue_lengths(port, auth).get("default") or 0

        assert wait_until(counted, timeout=60), (flower_queue_lengths(port, auth), flower.output()[-3000:])
        sentinels.kill_primary()
        sentinels.wait_failover()
        # The backlog is still there, on the promoted replica.
        assert lab.recorded("flower-backlog") < 100
        assert wait_until(counted, timeout=30), (flower_queue_lengths(port, auth), flower.output()[-3000:])
    finally:
        sentinels.stop()
