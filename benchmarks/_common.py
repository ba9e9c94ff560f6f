"""What every section shares: options, statistics, tables, targets, child processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import selectors
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
PG_DEFAULT = os.environ.get(
    "CASCADE_NOTIFY_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
STORES = ("memory", "sqlite", "postgres")


@dataclass(slots=True)
class Options:
    """The command line, as every section reads it."""

    quick: bool = False
    runs: int = 5
    pg: str = PG_DEFAULT  # empty: no PostgreSQL
    stores: tuple[str, ...] = STORES
    sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    concurrency: tuple[int, ...] = (8, 32, 64)
    pg_ok: bool = False

    def has(self, store: str) -> bool:
        return store in self.stores and (store != "postgres" or self.pg_ok)


# statistics and formatting


@dataclass(frozen=True, slots=True)
class Spread:
    """The median of some runs, with their min and max."""

    median: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        found = list(values)
        if not found:
            return cls(float("nan"), float("nan"), float("nan"), 0)
        return cls(statistics.median(found), min(found), max(found), len(found))

    def text(self, unit: str = "", digits: int = 0) -> str:
        if not self.count:
            return "n/a"
        if self.count == 1:
            return f"{num(self.median, digits)}{unit}"
        return (
            f"{num(self.median, digits)}{unit} ({num(self.low, digits)}–{num(self.high, digits)})"
        )


def num(value: float, digits: int = 0) -> str:
    if value != value:  # NaN
        return "n/a"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def ratio(ours: float, theirs: float) -> str:
    if not theirs or ours != ours or theirs != theirs:
        return "n/a"
    value = ours / theirs
    return f"{value:.3f}×" if value < 0.1 else f"{value:.2f}×"


@dataclass
class Table:
    """One section's table, printed as Markdown (readable in a terminal too)."""

    title: str
    headers: Sequence[str]
    rows: list[Sequence[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def render(self) -> str:
        widths = [len(h) for h in self.headers]
        for row in self.rows:
            widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

        out = [f"### {self.title}", "", line(self.headers)]
        out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        out.extend(line(row) for row in self.rows)
        if self.notes:
            out.append("")
            out.extend(self.notes)
        return "\n".join(out) + "\n"


@dataclass(frozen=True, slots=True)
class Target:
    """One of the issue's targets and what this run measured against it."""

    section: str
    goal: str
    measured: str
    met: bool | None  # None: not measured in this run

    @property
    def verdict(self) -> str:
        return {True: "met", False: "MISSED", None: "n/a"}[self.met]


@dataclass
class Result:
    tables: list[Table] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)


def say(text: str) -> None:
    """Progress, on stderr, so stdout holds only the tables."""
    print(text, file=sys.stderr, flush=True)


# the machine


def machine(pg: str) -> dict[str, str]:
    info = {
        "cpus": f"{os.cpu_count()} (nproc {len(os.sched_getaffinity(0))})",
        "cpu": _cpu_model(),
        "ram": f"{_meminfo('MemTotal') / 1024 / 1024:.1f} GiB",
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "postgresql": pg_version(pg) if pg else "not used",
        "load average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    versions = []
    for name in ("httpx", "httpcore", "aiohttp", "httpx-aiohttp", "apprise", "psycopg", "uvicorn"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions.append(f"{name} {version(name)}")
    info["packages"] = ", ".join(versions)
    return info


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _meminfo(key: str) -> int:
    """A /proc/meminfo figure in KiB (0 if unknown)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def available_kib() -> int:
    return _meminfo("MemAvailable")


def rss_kib() -> int:
    """This process's resident set size in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# PostgreSQL


def pg_version(dsn: str) -> str:
    try:
        import psycopg

        with psycopg.connect(dsn, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else "unknown"
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"


def pg_reachable(dsn: str) -> bool:
    return bool(dsn) and not pg_version(dsn).startswith("unreachable")


def pg_url(dsn: str, schema: str, **options: object) -> str:
    """The store URL for `schema` on the server at `dsn`."""
    parts = urlsplit(dsn)
    query = "&".join(
        [*(q for q in [parts.query] if q), f"schema={schema}"]
        + [f"{k}={v}" for k, v in options.items()]
    )
    return urlunsplit(parts._replace(query=query))


def drop_schema(dsn: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')  # type: ignore[arg-type]


# child processes, spoken to in JSON lines


class Child:
    """A `python -m benchmarks.<module> ...` process that answers in JSON lines.

    Every read has a deadline; `close()` ends the process (this one, by its own
    handle) if it does not end by itself.
    """

    def __init__(self, module: str, *args: object, env: dict[str, str] | None = None) -> None:
        self.name = f"{module} {' '.join(map(str, args))}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"benchmarks.{module}", *map(str, args)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self._selector = selectors.DefaultSelector()
        assert self.process.stdout is not None
        self._selector.register(self.process.stdout, selectors.EVENT_READ)

    def read(self, timeout: float) -> dict[str, Any]:
        """The next JSON line the child prints; RuntimeError after `timeout` seconds."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self._selector.select(left):
                raise RuntimeError(f"{self.name}: no answer within {timeout:g} s")
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.name}: exited with {self.process.wait()}")
            line = line.strip()
            if line.startswith("{"):
                found: dict[str, Any] = json.loads(line)
                return found

    def ask(self, command: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self.read(timeout)

    def close(self, timeout: float = 15.0) -> None:
        with contextlib.suppress(OSError, ValueError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._selector.close()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def reply(payload: dict[str, Any]) -> None:
    """In a child: answer the parent."""
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


async def stdin_closed(max_seconds: float) -> None:
    """Return when the parent closes our stdin (or goes away), or after `max_seconds`."""
    loop = asyncio.get_running_loop()
    closed = asyncio.Event()
    fd = sys.stdin.fileno()

    def readable() -> None:
        if not os.read(fd, 65536):
            loop.remove_reader(fd)
            closed.set()

    loop.add_reader(fd, readable)
    try:
        await asyncio.wait_for(closed.wait(), max_seconds)
    except TimeoutError:
        loop.remove_reader(fd)
