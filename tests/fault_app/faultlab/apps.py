from django.apps import AppConfig


class FaultlabConfig(AppConfig):
    """Test-only app of the template's fault-injection tests (tests/test_faults.py)."""

    name = "faultlab"
    default_auto_field = "django.db.models.BigAutoField"
