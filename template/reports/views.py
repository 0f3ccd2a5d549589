import logging
from functools import partial

from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import JsonResponse
from django.views.decorators.http import require_POST
from kombu.exceptions import OperationalError

from ops import metrics
from ops.broker import ensure_broker

from .forms import ReportForm
from .tasks import render_and_email

logger = logging.getLogger(__name__)


@login_required
@require_POST
def create_report(request):
    """Create a report, then render and email it in the background.

    202 with the report id once queued; 503 with nothing saved when the broker
    is down, rather than a report that no worker will ever pick up.
    """
    form = ReportForm(request.POST)
    if not form.is_valid():
        return JsonResponse({"errors": form.errors}, status=400)
    try:
        with transaction.atomic():
            report = form.save()
            # Raise inside the transaction, so a broker outage rolls the report back.
            ensure_broker()
            # Queue only after COMMIT: a worker that runs sooner would not find the
            # row. Should the broker fail in between, the report stays pending and
            # the admin action queues it again.
            transaction.on_commit(partial(render_and_email, [report.pk]), robust=True)
    except OperationalError:
        logger.exception("create_report: broker unavailable")
        metrics.enqueue_failed("create_report")
        return JsonResponse(
            {"error": "The task queue is unavailable, so nothing was saved. Try again shortly."},
            status=503,
        )
    return JsonResponse({"id": report.pk, "status": report.status}, status=202)
