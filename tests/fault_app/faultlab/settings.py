"""The generated project's settings plus the faultlab app.

Selected with DJANGO_SETTINGS_MODULE=faultlab.settings, which config/celery.py
and manage.py honour (they only setdefault it), so the generated files and the
Procfile's command lines stay exactly as rendered.
"""

from config.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "faultlab"]  # noqa: F405

# Redis hands back a message unacknowledged for longer than the visibility
# timeout at a worker's start, and at a sweep every unacked_restore_interval x
# unacked_restore_throttle seconds (10 x 10 by default). The tests shrink the
# visibility timeout to 12 s through the time limits; this shrinks the sweep to
# 1 s alike, and ops/transport.py's landing timeout (60 s) to 2 s, so that
# redelivery happens within the test, by the same mechanism.
if "CELERY_BROKER_TRANSPORT_OPTIONS" in globals():
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        **CELERY_BROKER_TRANSPORT_OPTIONS,  # noqa: F405
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
        "landing_timeout": 2,
    }

# The tests shrink TASK_MAX_COUNTDOWN to 2 s, below the generated tasks' 180 s
# default_retry_delay, which ops.E002 reports; faultlab's own task retries after
# 1 s, and it is the only one the tests run.
SILENCED_SYSTEM_CHECKS = ["ops.E002"]
