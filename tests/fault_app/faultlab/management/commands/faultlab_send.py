"""Queue a batch of faultlab.record tasks; print the number sent.

With --patient, a publish that fails (the broker failing over, a durable
publish that no replica confirmed) is tried again, as a client retries a 503,
until it is accepted or the patience runs out; it then prints, as JSON, what
was accepted, refused, and the longest time without an accepted publish.
"""

import json
import time

from django.core.management.base import BaseCommand

from config.celery import app
from faultlab.tasks import record


class Command(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument("batch")
        parser.add_argument("--count", type=int, default=1)
        parser.add_argument("--seconds", type=float, default=0.0)
        parser.add_argument("--stubborn", action="store_true")
        parser.add_argument("--ignore-result", action="store_true")
        parser.add_argument("--queue", help="another queue than the task's route")
        parser.add_argument("--countdown", type=float, help="seconds before the first run")
        parser.add_argument("--retries", type=int, default=0, help="retries before it records")
        parser.add_argument("--rate", type=float, default=0.0, help="publishes per second at most")
        parser.add_argument(
            "--patient", type=float, default=0.0, help="seconds to retry a refused publish"
        )

    def handle(self, batch, count, seconds, stubborn, ignore_result, queue, countdown, **options):
        retries, rate, patient = options["retries"], options["rate"], options["patient"]
        extra = {"queue": queue} if queue else {}
        extra |= {"countdown": countdown} if countdown else {}
        refused, last_accepted, longest_gap = 0, time.monotonic(), 0.0
        started = time.monotonic()
        with app.producer_or_acquire() as producer:
            for number in range(count):
                if rate:
                    time.sleep(max(0.0, started + number / rate - time.monotonic()))
                key = f"{batch}-{number:05d}"
                deadline = time.monotonic() + patient
                while True:
                    try:
                        record.apply_async(
                            (key, seconds, stubborn, retries),
                            task_id=key,
                            producer=producer,
                            ignore_result=ignore_result,
                            **extra,
                        )
                        break
                    except Exception:
                        if time.monotonic() > deadline:
                            raise
                        refused += 1
                        time.sleep(0.1)
                now = time.monotonic()
                longest_gap, last_accepted = max(longest_gap, now - last_accepted), now
        if patient:
            figures = {"accepted": count, "refused": refused, "longest_gap": round(longest_gap, 2)}
            self.stdout.write(json.dumps(figures))
        else:
            self.stdout.write(str(count))
