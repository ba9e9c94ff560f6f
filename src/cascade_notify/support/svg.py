"""Inline SVG bar charts for the operator's view: drawn on the server, no script, every
label escaped. Colours are presentation attributes, which a strict CSP allows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from markupsafe import Markup

WIDTH = 520
LABEL = 120
ROW = 24
BAR = 16
COLOURS = ("#2b6cb0", "#90cdf4")


@dataclass(frozen=True, slots=True)
class Bar:
    """One row: its label, a value per series (None: nothing to draw) and the text
    written after the bars."""

    label: str
    values: tuple[float | None, ...]
    text: str


def bars(
    title: str, rows: Sequence[Bar], *, top: float | None = None, legend: Sequence[str] = ()
) -> Markup:
    """A horizontal bar chart; `top` is the value of a full bar (default: the largest)."""
    largest = max((v for r in rows for v in r.values if v is not None), default=0.0)
    full = top if top is not None else largest
    series = max((len(r.values) for r in rows), default=1)
    step = BAR // series if series > 1 else BAR
    height = 28 + ROW * max(len(rows), 1) + (18 if legend else 0)
    room = WIDTH - LABEL - 90
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">',
        f"<title>{escape(title)}</title>",
        f'<text x="0" y="14" font-weight="bold">{escape(title)}</text>',
    ]
    if not rows:
        parts.append('<text x="0" y="40" fill="#555">nothing in this period</text>')
    for i, row in enumerate(rows):
        y = 24 + i * ROW
        parts.append(f'<text x="0" y="{y + 13}">{escape(row.label)}</text>')
        for j, value in enumerate(row.values):
            if value is None:
                continue
            length = 0.0 if full <= 0 else max(room * value / full, 1.0)
            colour = COLOURS[j % len(COLOURS)]
            parts.append(
                f'<rect x="{LABEL}" y="{y + j * step}" width="{length:.1f}" '
                f'height="{step - 1}" fill="{colour}"/>'
            )
        parts.append(f'<text x="{WIDTH - 85}" y="{y + 13}">{escape(row.text)}</text>')
    for j, name in enumerate(legend):
        x = LABEL + j * 110
        y = height - 12
        parts.append(f'<rect x="{x}" y="{y}" width="10" height="10" fill="{COLOURS[j % 2]}"/>')
        parts.append(f'<text x="{x + 14}" y="{y + 9}">{escape(name)}</text>')
    parts.append("</svg>")
    from markupsafe import Markup  # Jinja2's, the `support` extra: there with the page

    return Markup("".join(parts))  # noqa: S704 - every text in it went through escape()
