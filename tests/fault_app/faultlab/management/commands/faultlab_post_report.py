"""POST to the generated reports view through Django's full request stack
(test client: middleware, auth, view) and print the outcome as JSON."""

import json
import time

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.test import Client

from config.celery import app
from reports.models import Report


class Command(BaseCommand):
    def handle(self, **options):
        user, _ = get_user_model().objects.get_or_create(username="faultlab")
        client = Client()
        client.force_login(user)
        before = Report.objects.count()
        # A first request loads the view stack; it saves nothing (the form is invalid)
        # and leaves the broker alone. Loading the broker's transport imports its
        # client library without connecting. So `seconds` times the enqueueing
        # request, not Python compiling modules (PYTHONDONTWRITEBYTECODE).
        assert client.post("/reports/", {}, secure=True).status_code == 400
        with app.connection_for_write() as connection:
            assert connection.transport
        started = time.monotonic()
        response = client.post(
            "/reports/", {"title": "Fault", "recipient": "ops@example.com"}, secure=True
        )
        seconds = time.monotonic() - started
        outcome = {
            "status": response.status_code,
            "body": response.json(),
            "reports_before": before,
            "reports_after": Report.objects.count(),
            "seconds": round(seconds, 2),
        }
        self.stdout.write(json.dumps(outcome))
