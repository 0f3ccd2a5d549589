"""Queue a batch of faultlab.record tasks; print the number sent."""

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

    def handle(
        self, batch, count, seconds, stubborn, ignore_result, queue, countdown, retries, **options
    ):
        with app.producer_or_acquire() as producer:
            for number in range(count):
                record.apply_async(
                    (f"{batch}-{number:05d}", seconds, stubborn, retries),
                    task_id=f"{batch}-{number:05d}",
                    producer=producer,
                    ignore_result=ignore_result,
                    **({"queue": queue} if queue else {}),
                    **({"countdown": countdown} if countdown else {}),
                )
        self.stdout.write(str(count))
