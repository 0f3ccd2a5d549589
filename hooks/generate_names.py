"""Regenerate includes/names.jinja, the data behind copier.yml's validators.

The Jinja sandbox cannot import Python, so the names a project_slug must not
take and the IANA time zones are rendered here once and committed.
tests/test_names.py fails when this file is out of date.

    python hooks/generate_names.py
"""

import keyword
import sys
import zoneinfo
from pathlib import Path

# Top-level packages a generated project imports, and its own top-level names.
PROJECT_NAMES = [
    "amqp", "billiard", "celery", "config", "deploy", "django", "django_celery_beat",
    "django_celery_results", "docs", "environ", "flower", "gunicorn", "honcho",
    "kombu", "manage", "media", "ops", "psycopg", "pytest", "redis", "reports",
    "sentry_sdk", "static", "templates", "test", "tests", "tornado", "vine",
    "whitenoise",
]  # fmt: skip

TARGET = Path(__file__).resolve().parent.parent / "includes" / "names.jinja"


def render() -> str:
    stdlib = {name for name in sys.stdlib_module_names if not name.startswith("_")}
    reserved = sorted(stdlib | set(PROJECT_NAMES))
    keywords = sorted(keyword.kwlist + keyword.softkwlist)
    zones = sorted(zoneinfo.available_timezones())
    return (
        "{#- Data for copier.yml validators. Regenerate: python hooks/generate_names.py -#}\n"
        f"{{%- set PYTHON_KEYWORDS = {keywords!r} -%}}\n"
        f"{{%- set RESERVED_NAMES = {reserved!r} -%}}\n"
        f"{{%- set TIMEZONES = {zones!r} -%}}\n"
    )


if __name__ == "__main__":
    TARGET.write_text(render())
    print(f"wrote {TARGET}")
