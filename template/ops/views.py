import logging

from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from .broker import ensure_broker

logger = logging.getLogger(__name__)


@never_cache
@require_GET
def healthz(request):
    """Readiness of this web process: can it reach the database and the broker?

    200 when both answer, 503 otherwise. Used by compose, Kubernetes and nginx.
    Errors are logged, not returned: the endpoint is unauthenticated.
    """
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception:
        logger.exception("healthz: database unreachable")
        checks["database"] = "unavailable"
    try:
        ensure_broker()
        checks["broker"] = "ok"
    except Exception:
        logger.exception("healthz: broker unreachable")
        checks["broker"] = "unavailable"
    healthy = all(state == "ok" for state in checks.values())
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", "checks": checks},
        status=200 if healthy else 503,
    )
