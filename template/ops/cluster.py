"""Refuse a Redis Cluster at once, and say why (docs: troubleshooting.md).

A cluster refuses every command whose keys live in different hash slots
(CROSSSLOT), and the broker moves each message between two keys in one command
(the landing list of ops/transport.py, its claim and sweep scripts, kombu's
queue lengths). kombu has no cluster transport: its pull request #2204 is
open, and celery#9019 asks for one. ElastiCache Serverless and MemoryDB run in
cluster mode. Left alone, a worker would fail later, on its first multi-key
command, with an error that does not name the cause.

`check --deploy` (ops/checks.py) and a worker's start (config/celery.py) ask
each Redis the project uses for its `INFO cluster`.
"""

from django.conf import settings
from django.core import checks

from . import tls

ADVICE = "Use a Redis without cluster mode (a primary with replicas, or Sentinel), or RabbitMQ."


def clustered(url: str, options: dict | None) -> bool | None:
    """Whether the Redis at `url` runs in cluster mode; None when it does not answer
    (the health check and the worker's reconnection report that)."""
    import redis

    client = redis.Redis.from_url(
        url, socket_connect_timeout=3, socket_timeout=3, **(options or {})
    )
    try:
        return client.info("cluster").get("cluster_enabled") == 1
    except redis.ResponseError as error:
        # A database other than 0 in the URL: the connection's SELECT already fails.
        return "cluster mode" in str(error) or None
    except redis.RedisError:
        return None
    finally:
        client.close()


def refused() -> list[str]:
    """One message for each setting whose Redis is a cluster."""
    messages = []
    for setting, options in tls.LINKS:
        url = getattr(settings, setting, None)
        if not isinstance(url, str) or tls.scheme(url) not in ("redis", "rediss"):
            continue
        if clustered(url.split(";", 1)[0], getattr(settings, options, None)):
            messages.append(
                f"{setting} points at a Redis Cluster (cluster_enabled:1), which Celery cannot "
                f"use: its commands span keys in several hash slots (CROSSSLOT). {ADVICE}"
            )
    return messages


@checks.register("celery", deploy=True)
def check_not_redis_cluster(app_configs, **kwargs):
    """Only under --deploy, which runs where the broker answers: it connects."""
    return [checks.Error(message, id="ops.E004") for message in refused()]
