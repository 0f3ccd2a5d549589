"""The render matrix: every choice of every question appears at least once.

The first twelve cover each broker x each result backend x each database;
the rest vary the other questions. Boot tests use BOOT_VARIANTS.
"""

MATRIX = {
    "redis-djangodb-postgresql": {},  # the defaults
    "redis-djangodb-sqlite": {"database": "sqlite", "python_version": "3.11"},
    "redis-redis-postgresql": {"result_backend": "redis", "use_sentry": True},
    "redis-redis-sqlite": {
        "result_backend": "redis",
        "database": "sqlite",
        "deploy": ["systemd", "compose", "kubernetes"],
    },
    "redis-none-postgresql": {"result_backend": "none", "use_beat": False},
    "redis-none-sqlite": {
        "result_backend": "none",
        "database": "sqlite",
        "queues": "default",
        "use_flower": False,
        "deploy": [],
    },
    "rabbitmq-djangodb-postgresql": {"broker": "rabbitmq", "python_version": "3.13"},
    "rabbitmq-djangodb-sqlite": {
        "broker": "rabbitmq",
        "database": "sqlite",
        "use_beat": False,
        "use_flower": False,
        "deploy": ["kubernetes"],
    },
    "rabbitmq-redis-postgresql": {
        "broker": "rabbitmq",
        "result_backend": "redis",
        "timezone": "Europe/Paris",
        "queues": "critical:1, bulk:16:threads ,default-low",
    },
    "rabbitmq-redis-sqlite": {
        "broker": "rabbitmq",
        "result_backend": "redis",
        "database": "sqlite",
        "python_version": "3.12",
        "django_version": "6.0",
    },
    "rabbitmq-none-postgresql": {
        "broker": "rabbitmq",
        "result_backend": "none",
        "deploy": ["compose"],
        "use_sentry": True,
    },
    "rabbitmq-none-sqlite": {
        "broker": "rabbitmq",
        "result_backend": "none",
        "database": "sqlite",
        "deploy": ["systemd"],
        "task_time_limit": 30,
        "task_soft_time_limit": 20,
    },
}

BOOT_VARIANTS = {
    "redis-djangodb-postgresql": MATRIX["redis-djangodb-postgresql"],
    "redis-redis-sqlite": MATRIX["redis-redis-sqlite"],
    "rabbitmq-djangodb-postgresql": MATRIX["rabbitmq-djangodb-postgresql"],
}

# Built and booted in a real Docker Engine (test_engine_compose.py): the
# defaults, RabbitMQ with Redis results, and a lean project (no beat, no
# Flower, SQLite on a volume, fire-and-forget tasks).
ENGINE_VARIANTS = {
    "defaults": {},
    "rabbitmq-redis-postgresql": MATRIX["rabbitmq-redis-postgresql"],
    "lean": {
        "use_beat": False,
        "use_flower": False,
        "database": "sqlite",
        "result_backend": "none",
        "queues": "default:2",
    },
}
