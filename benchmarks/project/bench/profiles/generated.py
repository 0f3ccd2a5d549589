"""Profile "generated": the project's settings exactly as rendered, plus the bench app."""

from config.settings import *  # noqa: F403
from config.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "bench"]
# The bench view, then the project's own URLs.
ROOT_URLCONF = "bench.urls"
