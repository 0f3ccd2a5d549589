from django.apps import AppConfig


class ReportsConfig(AppConfig):
    """Example app: reports rendered and emailed by Celery tasks."""

    name = "reports"
