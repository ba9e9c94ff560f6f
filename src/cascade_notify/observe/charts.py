"""`cascade-notify stats --chart FILE.png|FILE.svg`: the figures an operator drops into a
report, drawn with matplotlib (the optional extra `charts`).

Three panels side by side: the delivery rate of each channel per day, its median time
to delivery per day, and what each channel cost over the whole window.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cascade_notify.errors import CascadeError
from cascade_notify.observe.types import Stats

#: The picture's size in inches and its resolution: 1500 x 450 pixels as PNG.
SIZE = (15.0, 4.5)
DPI = 100
FORMATS = (".png", ".svg")


class ChartError(CascadeError):
    """A chart cannot be drawn: matplotlib is missing, or the file name is wrong."""


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: never a window, never a display needed
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ChartError(
            f"charts need matplotlib: pip install 'cascade-notify[charts]' ({exc})"
        ) from None
    return plt


def write_chart(per_day: Stats, per_channel: Stats, path: str | os.PathLike[str]) -> Path:
    """Draw the charts into `path` (.png or .svg): `per_day` grouped by
    ("channel", "day"), `per_channel` by "channel"."""
    target = Path(path)
    if target.suffix.lower() not in FORMATS:
        raise ChartError(f"--chart {target}: write a .png or .svg file name")
    if per_day.by != ("channel", "day") or per_channel.by != ("channel",):
        raise ChartError("write_chart takes stats by (channel, day) and by channel")
    plt = _pyplot()
    days = sorted({str(r.key[1]) for r in per_day.rows})
    channels = sorted({str(r.key[0]) for r in per_day.rows})
    figure, (rate, took, cost) = plt.subplots(1, 3, figsize=SIZE, dpi=DPI)
    try:
        positions = range(len(days))
        for channel in channels:
            rows = {str(r.key[1]): r for r in per_day.rows if r.key[0] == channel}
            rates = [
                (rows[d].delivery_rate or 0.0) * 100 if d in rows and rows[d].sent else None
                for d in days
            ]
            medians = [rows[d].median_seconds if d in rows else None for d in days]
            rate.plot(positions, _gaps(rates), marker="o", label=channel)
            took.plot(positions, _gaps(medians), marker="o", label=channel)
        for axes, title, unit in (
            (rate, "Delivery rate per day", "% of attempts delivered"),
            (took, "Median time to delivery per day", "seconds from send"),
        ):
            axes.set_title(title)
            axes.set_ylabel(unit)
            axes.set_xticks(list(positions), days, rotation=45, ha="right", fontsize=8)
            axes.grid(alpha=0.3)
            if channels:
                axes.legend(fontsize=8)
        rate.set_ylim(0, 105)
        spent = [(str(r.key[0]), r.spent or 0.0) for r in per_channel.rows]
        cost.bar([c for c, _ in spent], [s for _, s in spent], color="tab:orange")
        cost.set_title("Spent per channel")
        cost.set_ylabel("cost (the providers' unit)")
        cost.grid(alpha=0.3, axis="y")
        figure.tight_layout()
        figure.savefig(target, dpi=DPI)
    finally:
        plt.close(figure)
    return target


def _gaps(values: list[float | None]) -> list[float]:
    return [float("nan") if v is None else v for v in values]
