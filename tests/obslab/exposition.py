"""Samples of Prometheus's text exposition format, read as a scrape would."""

import re

SAMPLE = re.compile(r"^(\w+)(?:\{([^}]*)\})? (\S+)$", re.M)
LABEL = re.compile(r'(\w+)="([^"]*)"')


def sample(exposition: str, metric: str, **labels: str) -> float | None:
    """The value of the sample of `metric` with exactly these labels (in any order), or None."""
    for name, found, number in SAMPLE.findall(exposition):
        if name == metric and dict(LABEL.findall(found)) == labels:
            return float(number)
    return None
