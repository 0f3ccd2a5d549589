from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operations: health checks, the dead-letter table and Celery signals."""

    name = "ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        from . import checks, metrics, signals  # noqa: F401  (registers checks and handlers)

        if metrics.enabled():
            metrics.connect()
