"""kombu's Redis transport, without the window in which a crash loses a message.

kombu takes a message off its queue with BRPOP and only then records it in the
"unacked" hash that brings a dead worker's messages back after the visibility
timeout. A worker killed in between, even while the BRPOP reply is still in its
socket buffer, loses that message: Redis holds it nowhere any more.
https://github.com/celery/kombu/issues/305

This transport uses Redis's reliable-queue pattern instead
(https://redis.io/docs/latest/commands/lmove/#pattern-reliable-queue):

1. BLMOVE moves the message from the queue to the queue's landing list;
2. a script moves it from the landing list to the unacked hash, atomically;
3. a sweep, run with kombu's own restore of expired messages, puts back on
   the queue a message a dead worker left on a landing list for longer than
   `landing_timeout` (transport option, in seconds).

A message is thus always on its queue, on a landing list or in the unacked
hash. BLMOVE waits on one list: the guarantee holds for a worker that consumes
one queue, as each of this project's workers does, with one list per queue
(`priority_steps` [0]). Any other worker falls back to BRPOP and says so.
kombu emulates priorities with a list per priority, which BLMOVE cannot wait
on together, so a message sent with a priority is refused, not silently sent
without it. Needs Redis 6.2 or later. config/celery.py registers it for
redis://, rediss:// and sentinel:// URLs.

Redis replicates asynchronously: a message the primary has acknowledged can
vanish with it when a replica takes over. With `publish_replicas` (transport
option) set, a publish also waits, with WAIT, until that many replicas hold the
message, and fails otherwise (NotReplicated). docs/reliability.md has the
figures, and settings.py the default.
"""

import logging
from contextlib import contextmanager
from functools import cached_property
from queue import Empty
from time import monotonic, time

from kombu.exceptions import OperationalError
from kombu.transport import redis, virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads
from redis.exceptions import ConnectionError as RedisConnectionError

logger = logging.getLogger(__name__)

# What decoding a message that is not kombu's raises. A name, not a tuple in the
# except clause: ruff formats that clause differently for Python 3.14 (PEP 758).
UNREADABLE = (TypeError, ValueError, KeyError)

# KEYS: landing list, unacked hash, unacked index, landing index.
# ARGV: the message as BLMOVE returned it, its delivery tag, its unacked entry
# ("" for a consumer that does not acknowledge), now.
CLAIM = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
    return 0
end
redis.call('ZREM', KEYS[4], ARGV[1])
if ARGV[3] ~= '' then
    redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
    redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
end
return 1
"""

# KEYS: landing list, queue, landing index. ARGV: now, landing timeout.
# A message is restored at the first sweep that finds it still landed at least
# `landing timeout` seconds after a sweep first saw it there.
SWEEP = """
local now, timeout = tonumber(ARGV[1]), tonumber(ARGV[2])
local restored = 0
for _, message in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
    local seen = redis.call('ZSCORE', KEYS[3], message)
    if not seen then
        redis.call('ZADD', KEYS[3], now, message)
    elseif now - tonumber(seen) >= timeout then
        redis.call('LREM', KEYS[1], 1, message)
        redis.call('ZREM', KEYS[3], message)
        redis.call('RPUSH', KEYS[2], message)
        restored = restored + 1
    end
end
return restored
"""


class NotReplicated(OperationalError):
    """The primary holds the message, but fewer replicas than asked for confirmed it.

    Not a connection error, which kombu would retry by publishing the message
    again: the caller decides (the web answers 503, and the client retries).
    """


class QoS(redis.QoS):
    """kombu's ack emulation, plus the sweep of landing lists."""

    def append(self, message, delivery_tag):
        if delivery_tag in self.channel.claimed:
            # The claim script has written the unacked entry already.
            return virtual.QoS.append(self, message, delivery_tag)
        return super().append(message, delivery_tag)

    def ack(self, delivery_tag):
        # kombu frees a message's prefetch slot only once Redis has dropped its
        # unacked entry. An ack that fails (a silent connection timing out) kept
        # the slot taken for good, and after prefetch_count of them the worker
        # consumed nothing more while it looked alive. Free it either way: the
        # entry left in Redis brings the message back after the visibility
        # timeout, a duplicate that idempotent tasks absorb.
        try:
            self._remove_from_indices(delivery_tag).execute()
        finally:
            virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag, requeue=False):
        # As ack: free the slot even when Redis cannot be told.
        try:
            if requeue:
                self.restore_by_tag(delivery_tag, leftmost=True)
            else:
                self._remove_from_indices(delivery_tag).execute()
        finally:
            virtual.QoS.ack(self, delivery_tag)

    def restore_visible(self, *args, **kwargs):
        # Not throttled like kombu's scan: one script call on a list that is
        # empty but for a crash, every unacked_restore_interval in a worker.
        self.channel.restore_landed()
        return super().restore_visible(*args, **kwargs)


class Channel(redis.Channel):
    """Takes messages with BLMOVE and the claim script instead of BRPOP."""

    QoS = QoS
    # One Redis list per queue, so that BLMOVE can wait on it.
    priority_steps = [0]
    landing_prefix = "unacked_landing:"
    landing_index_prefix = "unacked_landing_index:"
    landing_timeout = 60
    # Durable publishing (off with 0): replicas that must confirm each message,
    # and how long a publish waits for them, in milliseconds.
    publish_replicas = 0
    publish_replicas_timeout = 1000
    options = ("landing_timeout", "publish_replicas", "publish_replicas_timeout")
    from_transport_options = (*redis.Channel.from_transport_options, *options)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.claimed = set()  # delivery tags being delivered after a claim
        self._landing_queue = None  # the queue of the BLMOVE in flight
        self._no_ack_queues = set()
        self._warned = False
        self._pool_client = None

    @cached_property
    def _claim(self):
        return self.client.register_script(CLAIM)

    @cached_property
    def _sweep(self):
        return self.client.register_script(SWEEP)

    @contextmanager
    def conn_or_acquire(self, client=None):
        """kombu builds a new redis-py client for every ack, claim and sweep, and
        building one costs more than the command it sends. Keep one per connection
        pool instead: a client is thread-safe, and each command borrows a connection
        from the pool, as before."""
        if client:
            yield client
            return
        if self._pool is None and self.connection.client is None:
            # Closing a channel whose connection kombu has closed already (after a
            # broker connection loss) restores its unacknowledged messages first.
            # kombu would rebuild the pool from a connection that is gone, and the
            # AttributeError would stop the worker. A connection error is ignored
            # there instead; the messages come back after the visibility timeout.
            raise RedisConnectionError("the broker connection is closed")
        if self._pool_client is None or self._pool_client.connection_pool is not self.pool:
            self._pool_client = self._create_client()
        yield self._pool_client

    def _put(self, queue, message, **kwargs):
        # kombu's default priority (0) is the only one this transport delivers in order.
        if priority := self._get_message_priority(message):
            raise ValueError(
                f"Message priorities are not supported on Redis by ops/transport.py "
                f"(priority {priority}, queue {queue!r}): route urgent tasks to a queue "
                f"of their own instead. See the README."
            )
        if not self.publish_replicas or kwargs.get("_publish_batch") is not None:
            return super()._put(queue, message, **kwargs)
        # WAIT counts the replicas that hold every earlier write of its own
        # connection: one pipeline sends both on one connection, in one round trip.
        # https://redis.io/docs/latest/commands/wait/
        with self.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
            pipe.lpush(queue, dumps(message))
            if self._expires and queue in self._expires:
                pipe.pexpire(queue, self._expires[queue])
            pipe.wait(self.publish_replicas, self.publish_replicas_timeout)
            replicas = pipe.execute()[-1]
        if replicas < self.publish_replicas:
            raise NotReplicated(
                f"{replicas} of {self.publish_replicas} Redis replica(s) confirmed a message for "
                f"{queue!r} within {self.publish_replicas_timeout} ms. The primary holds it and "
                f"may still deliver it, but would lose it if it failed now."
            )
        return None

    def basic_consume(self, queue, no_ack, *args, **kwargs):
        (self._no_ack_queues.add if no_ack else self._no_ack_queues.discard)(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def _reliable_queue(self):
        """The one queue this channel can consume with BLMOVE, or None."""
        queues = self.active_queues
        if len(queues) == 1 and self.priority_steps == [0] and not self.global_keyprefix:
            return queues[0]
        if queues and not self._warned:
            self._warned = True
            logger.warning(
                "Consuming %s with BRPOP: a worker killed while it takes a message "
                "can lose it. Consume one queue per worker to avoid that.",
                ", ".join(queues),
            )
        return None

    def _brpop_start(self, timeout=None):
        queue = self._landing_queue = self._reliable_queue()
        if queue is None:
            return super()._brpop_start(timeout)
        timeout = self.brpop_timeout if timeout is None else timeout
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        landing, _ = self._landing_keys(queue)
        self.client.connection.send_command("BLMOVE", queue, landing, "RIGHT", "LEFT", timeout or 0)

    def _brpop_read(self, **options):
        queue = self._landing_queue
        if queue is None:
            return super()._brpop_read(**options)
        try:
            try:
                raw = self.client.parse_response(self.client.connection, "BLMOVE", **options)
            except self.connection_errors:
                # Disconnect so that the next poll reconnects; the message, if
                # any, waits on the landing list for the sweep.
                self.client.connection.disconnect()
                raise
            if raw is None:
                raise Empty()
            message = self._claim_landed(queue, raw)
            tag = message["properties"]["delivery_tag"]
            self.claimed.add(tag)
            try:
                self.connection._deliver(message, queue)
            finally:
                self.claimed.discard(tag)
            return True
        finally:
            self._landing_queue = self._in_poll = None
            self._flush_brpop_reauth()

    def _claim_landed(self, queue, raw):
        """Move a landed message to the unacked hash and return it, or raise Empty
        when a sweep has already put it back on the queue."""
        landing, landing_index = self._landing_keys(queue)
        with self.conn_or_acquire() as client:
            try:
                message = loads(bytes_to_str(raw))
                tag = message["properties"]["delivery_tag"]
                info = message["properties"]["delivery_info"]
                unacked = (info["exchange"], info["routing_key"])
            except UNREADABLE:
                # As kombu's BRPOP would, drop what no consumer can read.
                logger.error("Dropped a message that is not kombu's from %s: %r", queue, raw[:1024])
                client.lrem(landing, 1, raw)
                raise Empty() from None
            entry = "" if queue in self._no_ack_queues else dumps([message, *unacked])
            keys = [landing, self.unacked_key, self.unacked_index_key, landing_index]
            if not self._claim(keys=keys, args=[raw, tag, entry, time()], client=client):
                raise Empty()
        return message

    def restore_landed(self):
        """Put back on its queue every message a dead worker left landed."""
        with self.conn_or_acquire() as client:
            for queue in self.active_queues:
                landing, index = self._landing_keys(queue)
                keys, args = [landing, queue, index], [time(), self.landing_timeout]
                if restored := self._sweep(keys=keys, args=args, client=client):
                    logger.warning("Put %d message(s) left landed back on %s.", restored, queue)

    def _landing_keys(self, queue):
        return self.landing_prefix + queue, self.landing_index_prefix + queue

    def _poll_error(self, type, **options):
        if type == "BRPOP" and self._landing_queue is not None:
            # Read the BLMOVE reply as such; its message waits on the landing list.
            return self.client.parse_response(self.client.connection, "BLMOVE")
        return super()._poll_error(type, **options)


class Transport(redis.Transport):
    """kombu's Redis transport with the Channel above."""

    Channel = Channel


class SentinelChannel(Channel, redis.SentinelChannel):
    """The Channel above, on the primary that Redis Sentinel names: kombu's
    SentinelChannel brings the connection pool, which asks the sentinels again
    on every new connection (so after a failover too)."""

    # Both lists: Channel's alone would shadow master_name and sentinel_kwargs.
    from_transport_options = (*redis.SentinelChannel.from_transport_options, *Channel.options)


class SentinelTransport(redis.SentinelTransport):
    """kombu's Sentinel transport with the Channel above."""

    Channel = SentinelChannel
