"""ops/transport.py against a real Redis: a message a worker takes is always on
its queue, on the queue's landing list or in the unacked hash.

Needs REDIS_TEST_URL, a Redis database these tests may write to (CI sets it):
    REDIS_TEST_URL=redis://localhost:6379/15 uv run pytest tests/test_transport.py
Each test uses a queue of its own and removes its keys.
"""

import logging
import os
import uuid
from queue import Empty

import pytest
import redis
from django.conf import settings
from kombu import Connection, Consumer, Producer, Queue
from kombu.transport import get_transport_cls
from kombu.transport.redis import Mutex
from kombu.utils.json import loads

from ops.transport import NotReplicated, SentinelChannel, SentinelTransport, Transport

URL = os.environ.get("REDIS_TEST_URL")
needs_redis = pytest.mark.skipif(not URL, reason="set REDIS_TEST_URL to a Redis database")


def test_redis_urls_take_this_transport():
    assert get_transport_cls("redis") is get_transport_cls("rediss") is Transport
    assert isinstance(Connection(settings.CELERY_BROKER_URL).transport, Transport)


def test_sentinel_urls_take_it_too_with_the_sentinel_options():
    assert get_transport_cls("sentinel") is SentinelTransport
    # Both option lists: the sentinel's (master_name...) and this transport's.
    for option in ("master_name", "sentinel_kwargs", "landing_timeout", "publish_replicas"):
        assert option in SentinelChannel.from_transport_options


@pytest.fixture
def client():
    return redis.Redis.from_url(URL)


@pytest.fixture
def connection():
    # landing_timeout 0: the second sweep that finds a message landed restores it.
    options = {"landing_timeout": 0}
    with Connection(URL, transport_options=options) as conn:
        yield conn


@pytest.fixture
def queue(client):
    name = f"test-transport-{uuid.uuid4().hex}"
    yield Queue(name)
    client.delete(*client.keys(f"*{name}*"), name)


def publish(connection, queue, body):
    # The default exchange: the routing key names the queue.
    Producer(connection.default_channel).publish(body, routing_key=queue.name)


def consume(connection, *queues, no_ack=False):
    """Take one message: (channel, message), not acknowledged."""
    received = []
    channel = connection.default_channel
    with Consumer(channel, queues, callbacks=[lambda _, m: received.append(m)], no_ack=no_ack):
        connection.drain_events(timeout=5)
    return channel, received[0]


def landing(queue):
    """The list ops/transport.py moves the queue's messages to as workers take them."""
    return f"unacked_landing:{queue.name}"


def land(client, queue):
    """Do what BLMOVE does for a worker that then dies before it claims the message."""
    return client.lmove(queue.name, landing(queue), "RIGHT", "LEFT")


@needs_redis
def test_a_taken_message_stays_in_the_unacked_hash_until_acknowledged(connection, queue, client):
    publish(connection, queue, {"n": 1})
    _, message = consume(connection, queue)
    assert message.payload == {"n": 1}
    assert client.llen(queue.name) == 0
    assert client.llen(landing(queue)) == 0
    assert client.hexists("unacked", message.delivery_tag)
    message.ack()
    assert not client.hexists("unacked", message.delivery_tag)
    assert client.zscore("unacked_index", message.delivery_tag) is None


@needs_redis
def test_a_message_left_landed_goes_back_on_its_queue(connection, queue, client):
    publish(connection, queue, {"n": 2})
    land(client, queue)
    channel = connection.default_channel
    with Consumer(channel, [queue]):
        channel.restore_landed()  # first sighting
        assert client.llen(queue.name) == 0
        channel.restore_landed()  # landed for landing_timeout since: restored
    assert client.llen(queue.name) == 1
    assert client.exists(f"unacked_landing_index:{queue.name}") == 0
    _, message = consume(connection, queue)
    assert message.payload == {"n": 2}
    message.ack()


@needs_redis
def test_a_dead_workers_message_comes_back_at_the_first_sweep_past_its_timeout(queue, client):
    """Workers sweep every unacked_restore_interval (10 s), and every sweep must
    scan: kombu's default scans on every 10th, 100 s later."""
    with Connection(URL, transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS) as conn:
        publish(conn, queue, {"n": 6})
        channel, message = consume(conn, queue)  # taken, never acknowledged: its worker died

        def sweep():  # what each of the worker's periodic sweeps calls
            limit, throttle = channel.unacked_restore_limit, channel.unacked_restore_throttle
            channel.qos.restore_visible(num=limit, interval=throttle)

        sweep()  # younger than the visibility timeout: left alone
        assert client.llen(queue.name) == 0
        client.zadd("unacked_index", {message.delivery_tag: 0}, xx=True)  # now it is older
        sweep()
        # Checked before the connection closes: closing restores what it took.
        assert client.llen(queue.name) == 1
        assert not client.hexists("unacked", message.delivery_tag)


@needs_redis
def test_the_scan_lock_of_a_worker_killed_mid_scan_expires_within_30_s(client):
    """kombu's default keeps it 300 s, and no worker scans meanwhile."""
    with Connection(URL, transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS) as conn:
        channel = conn.default_channel
        with Mutex(client, channel.unacked_mutex_key, channel.unacked_mutex_expire):
            assert 0 < client.ttl(channel.unacked_mutex_key) <= 30


@needs_redis
def test_a_late_claim_does_not_deliver_a_restored_message(connection, queue, client):
    publish(connection, queue, {"n": 3})
    raw = land(client, queue)
    channel = connection.default_channel
    with Consumer(channel, [queue]):
        channel.restore_landed()
        channel.restore_landed()
        # The worker that took it wakes up now: the sweep got there first.
        with pytest.raises(Empty):
            channel._claim_landed(queue.name, raw)
    tag = loads(raw)["properties"]["delivery_tag"]
    assert not client.hexists("unacked", tag)
    assert client.llen(queue.name) == 1


@needs_redis
def test_a_consumer_without_acks_leaves_nothing_unacknowledged(connection, queue, client):
    publish(connection, queue, {"n": 4})
    _, message = consume(connection, queue, no_ack=True)
    assert message.payload == {"n": 4}
    assert not client.hexists("unacked", message.delivery_tag)
    assert client.llen(landing(queue)) == 0


@needs_redis
def test_two_queues_fall_back_to_brpop_and_say_so(connection, queue, client, caplog):
    other = Queue(f"{queue.name}-other")
    publish(connection, other, {"n": 5})
    with caplog.at_level(logging.WARNING, logger="ops.transport"):
        _, message = consume(connection, queue, other)
    assert message.payload == {"n": 5}
    assert not client.exists(landing(other))
    message.ack()
    assert "with BRPOP" in caplog.text


@needs_redis
def test_a_message_with_a_priority_is_refused_not_sent_without_it(connection, queue, client):
    with pytest.raises(ValueError, match="priorities are not supported"):
        Producer(connection.default_channel).publish({"n": 6}, routing_key=queue.name, priority=5)
    assert client.llen(queue.name) == 0
    publish(connection, queue, {"n": 7})  # the default priority is sent as before
    assert client.llen(queue.name) == 1


@needs_redis
def test_acks_and_claims_reuse_one_client_per_connection_pool(connection, queue, client):
    """kombu built a redis-py client per ack and claim, which costs more than the
    command; the transport keeps one per pool, and a new one once kombu replaces
    the pool (after a fork or a lost connection)."""
    publish(connection, queue, {"n": 1})
    channel, message = consume(connection, queue)
    with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
        assert first is second
        assert first.connection_pool is channel.pool
    message.ack()
    assert not client.hexists(channel.unacked_key, message.delivery_tag)
    channel._disconnect_pools()
    with channel.conn_or_acquire() as third:
        assert third is not first
        assert third.connection_pool is channel.pool


@needs_redis
def test_an_ack_that_fails_still_frees_the_prefetch_slot(connection, queue, client, monkeypatch):
    """A worker whose acks time out on a silent connection must not stop
    consuming for good: the slot is freed, and the unacked entry left in Redis
    brings the message back after the visibility timeout."""
    publish(connection, queue, {"n": 1})
    channel = connection.default_channel
    channel.basic_qos(prefetch_count=1)
    channel, message = consume(connection, queue)
    assert not channel.qos.can_consume()

    def silent(*args, **kwargs):
        raise redis.exceptions.TimeoutError("Timeout reading from socket")

    monkeypatch.setattr(channel.qos, "_remove_from_indices", silent)
    with pytest.raises(redis.exceptions.TimeoutError):
        message.ack()
    assert channel.qos.can_consume()
    assert client.hdel(channel.unacked_key, message.delivery_tag) == 1  # left for the restore
    client.zrem(channel.unacked_index_key, message.delivery_tag)


@needs_redis
def test_a_durable_publish_that_no_replica_confirms_fails_and_says_so(queue, client):
    """BROKER_PUBLISH_REPLICAS: a publish waits for that many replicas (WAIT),
    and fails when they do not confirm it. This Redis has no replica."""
    replicas = client.info("replication")["connected_slaves"]
    options = {"publish_replicas": replicas + 1, "publish_replicas_timeout": 50}
    refused = pytest.raises(NotReplicated, match=rf"{replicas} of {replicas + 1} Redis replica")
    with Connection(URL, transport_options=options) as conn, refused:
        publish(conn, queue, {"n": 1})
    # The primary holds it all the same: only a failover would lose it.
    assert client.llen(queue.name) == 1


@needs_redis
def test_closing_a_channel_after_its_connection_is_a_connection_error(connection, queue, client):
    """After a lost broker connection, kombu can close a channel whose connection
    it has closed already, restoring the unacknowledged messages first. That must
    fail as a connection error, which kombu ignores there, and not as the
    AttributeError that stopped the worker (seen in a Sentinel failover)."""
    publish(connection, queue, {"n": 1})
    channel, message = consume(connection, queue)
    errors = connection.connection_errors
    transport, channel.connection.client = channel.connection.client, None
    channel._disconnect_pools()
    try:
        with pytest.raises(errors):
            channel.close()
    finally:
        channel.connection.client = transport
    # The message waits in the unacked hash for the visibility timeout.
    assert client.hdel("unacked", message.delivery_tag) == 1
