"""The generated Grafana dashboard, read by a real Prometheus.

There is no Grafana in a reachable registry, so its panels are checked the way
Grafana would run them: every target's query against Prometheus's API, with
Grafana's $__rate_interval put in. `draw` plots the same queries over a time
range with matplotlib: the picture in docs/operations.md.
"""

import json
import math
from pathlib import Path

RATE_INTERVAL = "30s"  # Grafana's $__rate_interval for a 1 s scrape interval, rounded up


def queries(dashboard: Path) -> dict[str, list[tuple[str, str]]]:
    """{panel title: [(PromQL, legend format)]}."""
    data = json.loads(dashboard.read_text())
    return {
        panel["title"]: [
            (target["expr"].replace("$__rate_interval", RATE_INTERVAL), target["legendFormat"])
            for target in panel["targets"]
        ]
        for panel in data["panels"]
    }


def legend(template: str, labels: dict) -> str:
    text = template
    for key, value in labels.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def draw(prom, dashboard: Path, start: float, end: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = queries(dashboard)
    columns = 2
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(12, 2.6 * rows), squeeze=False)
    for axis, (title, targets) in zip(axes.flat, panels.items(), strict=False):
        for expr, template in targets:
            result = prom.api("query_range", query=expr, start=start, end=end, step=1)["result"]
            for series in result:
                times = [float(t) - start for t, _ in series["values"]]
                values = [float(v) for _, v in series["values"]]
                if "rate(" in expr and not any(values) and len(result) > 1:
                    continue  # a task at 0 all along (ops.metrics.known_from_zero): legend clutter
                axis.plot(times, values, label=legend(template, series["metric"]))
        axis.set_title(title, fontsize=10)
        axis.tick_params(labelsize=8)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7, loc="upper right")
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    figure.supxlabel("seconds into the test run", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
