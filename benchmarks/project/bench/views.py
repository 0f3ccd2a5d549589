from django.db import transaction
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .tasks import noop


@csrf_exempt
@require_POST
def enqueue(request):
    """Workload 4: queue a task once the request's transaction commits, as
    reports/views.py's create_report does (without its form and login)."""
    with transaction.atomic():
        transaction.on_commit(noop.delay, robust=True)
    return JsonResponse({"queued": True}, status=202)
