"""A RabbitMQ quorum cluster: a node dies, or is cut off, mid-batch; nothing is lost.

Three nodes of the RabbitMQ compose.yaml runs (4.3, stand-ins from Debian sid,
tests/enginelab/rabbitmq.py), clustered, each publishing AMQP on 127.0.0.1. The
project's broker URL is Celery's failover list of the three: workers and the
sender connect to the first node and move to the next when it fails
(https://docs.celeryq.dev/en/stable/userguide/configuration.html#broker-url).
The work queue is a quorum queue (config/settings.py), led by the first node,
which the worker declared it through (RabbitMQ's client-local leader locator).

Booted like tests/test_faults.py: the sender publishes at a steady pace with
publisher confirms, and tries a refused publish again, as a client retries a
503. Each case reports sent, completed, lost and duplicates, and the longest
gaps between two accepted publishes and between two completed tasks.
"""

from __future__ import annotations

import re
import time

import pytest
import test_faults
from enginelab.rabbitmq import rabbitmq_cluster
from test_faults import QUEUE, report

fault_projects, lab_for = test_faults.fault_projects, test_faults.lab_for

SENT, RATE, TASK_SECONDS = 400, 50, 0.1
# A killed node's supervisor (systemd, Kubernetes) starts it again after this long.
RESTART_AFTER = 20
# The web's /healthz/ view, called in the project: its status code.
HEALTHZ = (
    "from django.test import RequestFactory; from ops.views import healthz; "
    "print(healthz(RequestFactory().get('/healthz/')).status_code)"
)


def run_batch(lab, batch: str, fault, heal=None) -> dict:
    """Send SENT tasks at RATE, inject `fault` once 50 are done, and drain."""
    sender = lab.send_steadily(batch, SENT, RATE, TASK_SECONDS)
    assert lab.wait_recorded(batch, 50, timeout=60) >= 50
    fault()
    sending = lab.finish_sending(sender, SENT)
    if heal:
        heal()
    lab.env["FAULTLAB_RABBITMQCTL"] = lab.cluster.rabbitmqctl  # a node that is up
    lab.wait_drained(batch, SENT, timeout=180)
    figures = lab.stats(batch, SENT)
    figures["publish_gap"] = sending["longest_gap"]
    figures["refused"] = sending["refused"]
    figures["worker_gap"] = lab.completion_gap(batch)
    return figures


FAULTS = {
    "SIGKILL": f"SIGKILL of the node leading it, restarted after {RESTART_AFTER} s",
    "partitioned": "the node leading it cut off from the other two, not from the clients",
}


def check_and_report(lab, batch: str, fault: str, figures: dict, started: float) -> None:
    notes = (
        f"RabbitMQ {lab.cluster.version}, 3 nodes, quorum queue; {FAULTS[fault]}; the worker and the "
        f"sender used that node first; longest gap: publishes {figures['publish_gap']} s, completions "
        f"{figures['worker_gap']} s; {figures['refused']} publishes refused and retried"
    )
    report(f"RabbitMQ cluster: leader node {fault} mid-batch", "rabbitmq cluster", figures, notes, started)
    print(notes, figures)
    # On a failure: what the worker did last, and each node's view of the queue and its consumers.
    assert figures["lost"] == 0, (
        f"{figures}\n{lab.diagnosis(batch, SENT)}\n{lab.workers[-1].output()[-3000:]}\n{lab.cluster.describe('cdc')}"
    )
    assert figures["duplicates"] <= figures["absorbed"] + figures["interrupted"], figures


@pytest.fixture
def cluster(fault_projects):
    with rabbitmq_cluster(fault_projects("rabbitmq")[0]) as nodes:
        yield nodes


def started_on_the_first_node(lab_for, cluster):
    """(lab, worker): a Lab on the cluster and its worker consuming QUEUE, whose
    leader is the node the clients use first."""
    lab = lab_for("rabbitmq", rabbitmq=cluster)
    lab.cluster = cluster  # run_batch and check_and_report read it
    worker = lab.ready(lab.start_worker())
    leader = cluster.leader("cdc", QUEUE)
    assert leader == cluster.containers[0], f"{QUEUE} is led by {leader}, not by the first node"
    return lab, worker


@pytest.mark.boot
@pytest.mark.xdist_group("rabbitmq-cluster")
def test_the_node_leading_the_work_queue_killed_mid_batch(lab_for, cluster):
    started = time.monotonic()
    lab, worker = started_on_the_first_node(lab_for, cluster)
    first = cluster.containers[0]

    readiness = []

    def kill_then_restart():
        cluster.kill(first)
        killed = time.monotonic()
        # The web's readiness (/healthz/) while the first node of its list is dead.
        readiness.append(lab.manage("shell", "-c", HEALTHZ, check=False))
        time.sleep(max(0.0, RESTART_AFTER - (time.monotonic() - killed)))
        cluster.restart(first)

    figures = run_batch(lab, "rmq-leader-kill", kill_then_restart)
    check_and_report(lab, "rmq-leader-kill", "SIGKILL", figures, started)
    # The other nodes of the list answer: the web stays ready.
    (probe,) = readiness
    assert probe.stdout.strip().endswith("200"), probe.stdout + probe.stderr
    # Publishing moved to another node of the URL list, rather than waiting for
    # the dead one to come back. (The worker moves too, but then waits for it:
    # docs/reliability.md, "What the fault tests found".)
    assert figures["publish_gap"] < RESTART_AFTER, f"publishing waited for the dead node: {figures}"
    others = "|".join(str(port) for port in cluster.ports[1:])
    assert re.search(rf"Connected to amqp://\S+:({others})/", worker.output()), "the worker never moved"


@pytest.mark.boot
@pytest.mark.xdist_group("rabbitmq-cluster")
def test_the_node_leading_the_work_queue_cut_off_from_the_others_mid_batch(lab_for, cluster):
    started = time.monotonic()
    lab, _ = started_on_the_first_node(lab_for, cluster)
    first = cluster.containers[0]
    figures = run_batch(lab, "rmq-partition", lambda: cluster.partition(first), lambda: cluster.heal(first))
    check_and_report(lab, "rmq-partition", "partitioned", figures, started)
