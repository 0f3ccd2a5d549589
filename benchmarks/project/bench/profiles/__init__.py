"""The suite's profiles, each a Django settings module (DJANGO_SETTINGS_MODULE).

- generated: the project's settings exactly as rendered.
- reference: cookiecutter-django's published Celery settings.
- ceiling: the reference, tuned for throughput with no guarantee kept.
"""
