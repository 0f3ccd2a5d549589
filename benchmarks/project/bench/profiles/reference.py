"""Profile "reference": cookiecutter-django's published Celery settings
(its config/settings/base.py), on the same project, broker, queues and tasks.

Every CELERY_* setting the template rendered is dropped first, so none of the
template's choices leaks in; then each setting this profile depends on is set,
Celery's defaults included. The suite also strips any --prefetch-multiplier
from the worker's command line and sets CELERY_WORKER_PREFETCH_MULTIPLIER.
"""

from kombu import transport

from bench.profiles.generated import *  # noqa: F403
from config import settings as rendered

for _name in [name for name in dir(rendered) if name.startswith("CELERY_")]:
    globals().pop(_name, None)

# Kept from the project: the broker and the routing, the same for every profile.
CELERY_BROKER_URL = rendered.CELERY_BROKER_URL
CELERY_TASK_DEFAULT_QUEUE = rendered.CELERY_TASK_DEFAULT_QUEUE
CELERY_TASK_QUEUES = rendered.CELERY_TASK_QUEUES
CELERY_TASK_ROUTES = rendered.CELERY_TASK_ROUTES
CELERY_TIMEZONE = rendered.TIME_ZONE
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# cookiecutter-django's settings, as published.
CELERY_RESULT_BACKEND = CELERY_BROKER_URL
CELERY_RESULT_EXTENDED = True
CELERY_RESULT_BACKEND_ALWAYS_RETRY = True
CELERY_RESULT_BACKEND_MAX_RETRIES = 10
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_TIME_LIMIT = 5 * 60
CELERY_TASK_SOFT_TIME_LIMIT = 60
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# Celery's defaults, which cookiecutter-django keeps: early acks, prefetch 4,
# results stored, no recycling of the pool's children.
CELERY_TASK_ACKS_LATE = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 4
CELERY_TASK_IGNORE_RESULT = False
CELERY_WORKER_MAX_TASKS_PER_CHILD = None
CELERY_WORKER_MAX_MEMORY_PER_CHILD = None

# kombu's own Redis transport: config/celery.py (imported before any settings
# module) registered ops/transport.py for these schemes.
transport.TRANSPORT_ALIASES.update(redis="kombu.transport.redis:Transport", rediss="kombu.transport.redis:Transport")
