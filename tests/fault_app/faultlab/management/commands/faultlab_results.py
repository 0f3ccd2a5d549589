"""Print the result backend's state of each task of a batch, counted by state."""

import json
from collections import Counter

from django.core.management.base import BaseCommand

from config.celery import app


class Command(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument("batch")
        parser.add_argument("--count", type=int, required=True)

    def handle(self, batch, count, **options):
        states = Counter(app.AsyncResult(f"{batch}-{number:05d}").state for number in range(count))
        self.stdout.write(json.dumps(states))
