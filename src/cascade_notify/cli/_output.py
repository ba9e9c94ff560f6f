"""What every command prints through: the consoles, aligned rows, and the log format.

Output read by a script is never wrapped: when stdout (or stderr) is not a terminal,
each message is one line however long, so `grep` and `cut` see it whole. Rows are
aligned on terminal cells (rich's `cell_len`: `⌛` takes two), and no line ends in
spaces. Every command logs to stderr in one format, `LOG_FORMAT`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from rich.cells import cell_len
from rich.console import Console
from rich.text import Text

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


class _Lazy:
    """A console made when first used, on the streams as they are then (the test
    runner swaps them per invocation)."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr

    def _console(self) -> Console:
        stream = sys.stderr if self._stderr else sys.stdout
        return Console(file=stream, highlight=False, soft_wrap=not stream.isatty())

    def print(self, *objects: object, **options: object) -> None:
        self._console().print(*objects, **options)  # type: ignore[arg-type]

    def rows(self, rows: Sequence[Sequence[str | Text]], *, gap: int = 2) -> None:
        """Print `rows` as aligned columns: every column but the last padded to its
        widest cell, the last never padded (no trailing spaces)."""
        out = self._console()
        for line in aligned(rows, gap=gap):
            out.print(line, soft_wrap=True)


out = _Lazy(stderr=False)
err = _Lazy(stderr=True)


def aligned(rows: Sequence[Sequence[str | Text]], *, gap: int = 2) -> list[Text]:
    """`rows` as lines of aligned columns, measured in terminal cells."""
    cells = [[c if isinstance(c, Text) else Text(c) for c in row] for row in rows]
    widths: list[int] = []
    for row in cells:
        for i, cell in enumerate(row[:-1]):
            width = cell_len(cell.plain)
            if i == len(widths):
                widths.append(width)
            else:
                widths[i] = max(widths[i], width)
    lines = []
    for row in cells:
        line = Text()
        for i, cell in enumerate(row):
            line.append_text(cell)
            if i < len(row) - 1:
                line.append(" " * (widths[i] - cell_len(cell.plain) + gap))
        line.rstrip()
        lines.append(line)
    return lines


def store_label(url: str) -> str:
    """How commands name a store URL: a SQLite file by its absolute path (where it is,
    whatever the working directory), any other without its password and options."""
    base = url.split("?", 1)[0]
    if base.startswith("sqlite:///") and base != "sqlite:///:memory:":
        return f"sqlite:///{Path(base.removeprefix('sqlite:///')).resolve()}"
    scheme, sep, rest = base.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if at and ":" in userinfo:
        return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"
    return base


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to `sys.stderr` as it is at each record (a test runner swaps it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def setup_logging(level: str | int = "warning") -> None:
    """Log to stderr in the one format every command uses (`level`: a name or number)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _Stderr):
            root.removeHandler(handler)
    handler = _Stderr()
    handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATE_FORMAT))
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)


__all__ = ["LOG_FORMAT", "aligned", "err", "out", "setup_logging", "store_label"]
