"""`--chart`: time to delivery over the scenario's time, per policy (matplotlib, the
`charts` extra)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cascade_notify.errors import CascadeError
from cascade_notify.simulate.report import Report, percentile
from cascade_notify.simulate.scenario import Scenario

_BIN = 900.0  # a quarter of an hour


class ChartError(CascadeError):
    """A chart cannot be drawn (matplotlib missing, or the file cannot be written)."""


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ChartError("--chart needs matplotlib: pip install 'cascade-notify[charts]'") from exc
    return plt


def draw_chart(report: Report, scenario: Scenario, path: str | Path) -> None:
    """Write a PNG: per policy, the p50 and p95 time to delivery of the deliveries sent in
    each quarter hour, over the scenario's time (UTC), outages shaded."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(9, 4.2), dpi=100)
    start = scenario.start_ts
    for outage in scenario.outages:
        axes.axvspan(
            (outage.start_ts - start) / 3600,
            (outage.end_ts - start) / 3600,
            color="0.9",
            label=f"outage: {outage.provider or outage.channel} ({outage.fails})",
        )
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    for index, policy in enumerate(report.policies):
        bins: dict[int, list[float]] = {}
        for sent, took in policy.samples:
            if took is not None:
                bins.setdefault(int(sent // _BIN), []).append(took / 60)
        keys = sorted(bins)
        xs = [(k + 0.5) * _BIN / 3600 for k in keys]
        colour = colours[index % len(colours)]
        name = policy.label if len(report.policies) > 1 else policy.policy
        p95 = [percentile(sorted(bins[k]), 95) for k in keys]
        p50 = [percentile(sorted(bins[k]), 50) for k in keys]
        axes.plot(xs, p95, color=colour, label=f"{name}: p95")
        axes.plot(xs, p50, color=colour, linestyle="--", linewidth=1, label=f"{name}: p50")
    axes.set_yscale("symlog", linthresh=1)
    axes.set_ylabel("time to delivery, minutes")
    day = datetime.fromtimestamp(start, UTC)
    axes.set_xlabel(f"hours from {day:%Y-%m-%d %H:%M} UTC (time sent)")
    hours = max(1, math.ceil(scenario.model.traffic.window / 3600))
    axes.set_xlim(0, hours)
    axes.set_title(report.scenario, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    try:
        figure.savefig(path, format="png")
    except OSError as exc:
        raise ChartError(f"cannot write the chart to {path}: {exc.strerror or exc}") from exc
    finally:
        plt.close(figure)
