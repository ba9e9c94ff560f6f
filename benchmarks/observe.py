"""Section `stats`: the read-only views over a million stored deliveries.

For SQLite and PostgreSQL, the runner writes N finished deliveries in bulk into the
store's tables (no `send()`: plain INSERT / COPY of rows as the engine leaves them),
spread over the last 30 days and 100,000 recipients, in five shapes: delivered on
WhatsApp (60 %), WhatsApp failed then Telegram (15 %), WhatsApp skipped for want
of an address then SMS (10 %), WhatsApp timed out, Telegram failed, then SMS (10 %),
and exhausted (5 %): about 1.6 attempts a delivery. Then it times, on the store's
own methods (what the CLI calls):

- `stats --since 30d` (by channel): the median of the runs;
- `deliveries --recipient X` (the first page): the median of 20 recipients.

Targets (issue 19): stats under 5 s on SQLite and 3 s on PostgreSQL, the list under
50 ms, at 1,000,000 deliveries. `--quick` uses 20,000.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks._common import Options, Result, Table, Target, drop_schema, num, pg_url, say

DAY = 86400.0
RECIPIENTS = 100_000
BATCH = 20_000
STATS_TARGET = {"sqlite": 5.0, "postgres": 3.0}
LIST_TARGET = 0.050


def _steps_json() -> str:
    from cascade_notify import load_config
    from cascade_notify.stores._codec import encode_steps

    config = load_config(
        """
providers:
  wa: {type: fake, channel: whatsapp}
  tg: {type: fake, channel: telegram, receipts: [delivered]}
  sms: {type: fake, channel: sms}
policies:
  p:
    steps:
      - {channel: whatsapp, providers: [wa]}
      - {channel: telegram, providers: [tg]}
      - {channel: sms, providers: [sms]}
"""
    )
    return encode_steps(config.policies["p"].steps)


def recipients(size: int) -> int:
    """How many customers the deliveries go to: ten deliveries each, at most 100,000."""
    return max(1, min(RECIPIENTS, size // 10))


def rows(size: int, now: float) -> Iterator[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """(delivery rows, attempt rows) in batches: DELIVERY_COLUMNS + (poked, token), and
    ATTEMPT_COLUMNS."""
    steps = _steps_json()
    message = json.dumps({"text": "Your parcel has arrived."})
    skip = json.dumps(
        [{"step": 0, "channel": "whatsapp", "reason": "no_address", "ts": 0.0}]
    )  # ts is not read by the views
    rng = random.Random(19)
    attempt_number = 0
    for first in range(0, size, BATCH):
        deliveries: list[tuple[Any, ...]] = []
        attempts: list[tuple[Any, ...]] = []
        for index in range(first, min(size, first + BATCH)):
            created = now - rng.random() * 30 * DAY
            took = 1 + rng.random() * 600
            delivery_id = f"{int(created * 1000):012x}{index:020x}"
            customer = index % recipients(size)
            recipient = (
                f'{{"id":"customer-{customer}","whatsapp":"+7916{customer:07d}",'
                f'"sms":"+7916{customer:07d}"}}'
            )
            shape = rng.random()
            plan: list[tuple[int, str, str, str, float | None]]  # step, channel, provider...
            skipped = "[]"
            if shape < 0.60:
                plan, status, channel = (
                    [(0, "whatsapp", "wa", "delivered", 0.01)],
                    "delivered",
                    "whatsapp",
                )
            elif shape < 0.75:
                plan = [
                    (0, "whatsapp", "wa", "failed", 0.01),
                    (1, "telegram", "tg", "delivered", None),
                ]
                status, channel = "delivered", "telegram"
            elif shape < 0.85:
                plan, status, channel = [(2, "sms", "sms", "delivered", 0.05)], "delivered", "sms"
                skipped = skip
            elif shape < 0.95:
                plan = [
                    (0, "whatsapp", "wa", "timed_out", 0.01),
                    (1, "telegram", "tg", "failed", None),
                    (2, "sms", "sms", "delivered", 0.05),
                ]
                status, channel = "delivered", "sms"
            else:
                plan = [(0, "whatsapp", "wa", "failed", 0.01), (2, "sms", "sms", "failed", 0.05)]
                status, channel = "exhausted", None
            finished = created + took
            deliveries.append(
                (
                    delivery_id, "p", status, plan[-1][0], channel, created, created + DAY,
                    finished, None, None, recipient, message, steps, skipped, "{}", None, 1, 0, 1,
                )
            )  # fmt: skip
            for step, on, provider, outcome, cost in plan:
                attempt_number += 1
                attempts.append(
                    (
                        f"a{attempt_number:031x}", delivery_id, step, on, provider, outcome,
                        created, finished, None, f"{provider}-bulk-{attempt_number}", None,
                        None, None, cost, None, None, None,
                    )
                )  # fmt: skip
        yield deliveries, attempts


async def _create(url: str) -> None:
    from cascade_notify.stores import open_store

    store = open_store(url)
    await store.open()
    await store.close()


def fill_sqlite(path: str, size: int, now: float) -> None:
    import sqlite3

    from cascade_notify.stores._codec import ATTEMPT_COLUMNS, DELIVERY_COLUMNS

    asyncio.run(_create(f"sqlite:///{path}"))
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    d_sql = (
        f"INSERT INTO deliveries ({', '.join(DELIVERY_COLUMNS)}, poked, token) "  # noqa: S608
        f"VALUES ({', '.join('?' * (len(DELIVERY_COLUMNS) + 2))})"
    )
    a_sql = (
        f"INSERT INTO attempts ({', '.join(ATTEMPT_COLUMNS)}) "  # noqa: S608
        f"VALUES ({', '.join('?' * len(ATTEMPT_COLUMNS))})"
    )
    for deliveries, attempts in rows(size, now):
        conn.execute("BEGIN")
        conn.executemany(d_sql, deliveries)
        conn.executemany(a_sql, attempts)
        conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


def fill_postgres(dsn: str, schema: str, size: int, now: float) -> None:
    import psycopg

    from cascade_notify.stores._codec import ATTEMPT_COLUMNS, DELIVERY_COLUMNS

    asyncio.run(_create(pg_url(dsn, schema)))
    with psycopg.connect(dsn, autocommit=True, options=f"-c search_path={schema}") as conn:
        for deliveries, attempts in rows(size, now):
            with conn.transaction(), conn.cursor() as cur:
                columns = f"{', '.join(DELIVERY_COLUMNS)}, poked, token"
                with cur.copy(f"COPY deliveries ({columns}) FROM STDIN") as copy:  # type: ignore[arg-type]
                    for row in deliveries:
                        copy.write_row([*row[:-2], False, 1])
                with cur.copy(f"COPY attempts ({', '.join(ATTEMPT_COLUMNS)}) FROM STDIN") as copy:  # type: ignore[arg-type]
                    for row in attempts:
                        copy.write_row(row)
        conn.execute("VACUUM ANALYZE deliveries")
        conn.execute("VACUUM ANALYZE attempts")


async def measure(
    url: str, now: float, runs: int, size: int
) -> tuple[list[float], list[float], int]:
    """Seconds of each `stats --since 30d` run, of each recipient's first page; and how
    many deliveries the stats counted."""
    from cascade_notify.observe import DeliveryQuery
    from cascade_notify.stores import Observable, open_store

    store = open_store(url)
    await store.open()
    assert isinstance(store, Observable)
    try:
        stats_times = []
        counted = 0
        for _ in range(runs):
            began = time.perf_counter()
            found = await store.stats(now - 30 * DAY, now, ("channel",))
            stats_times.append(time.perf_counter() - began)
            counted = found.deliveries
        rng = random.Random(7)
        list_times = []
        for _ in range(20):
            query = DeliveryQuery(recipient=f"customer-{rng.randrange(recipients(size))}")
            began = time.perf_counter()
            page = await store.list_deliveries(query, limit=50)
            list_times.append(time.perf_counter() - began)
            assert page.items
        return stats_times, list_times, counted
    finally:
        await store.close()


def run(options: Options) -> Result:
    size = 20_000 if options.quick else 1_000_000
    table = Table(
        f"stats: the views over {num(size)} stored deliveries",
        ["store", "fill (bulk)", "stats --since 30d", "deliveries --recipient X", "counted"],
    )
    targets: list[Target] = []
    now = time.time()
    for kind in ("sqlite", "postgres"):
        if not options.has(kind):
            continue
        schema = f"cn_bench_{uuid.uuid4().hex[:10]}"
        with tempfile.TemporaryDirectory() as folder:
            began = time.perf_counter()
            if kind == "sqlite":
                path = str(Path(folder) / "views.db")
                fill_sqlite(path, size, now)
                url = f"sqlite:///{path}"
            else:
                fill_postgres(options.pg, schema, size, now)
                url = pg_url(options.pg, schema)
            filled = time.perf_counter() - began
            say(f"  {kind}: {num(size)} deliveries written in {filled:.0f} s")
            try:
                stats_times, list_times, counted = asyncio.run(
                    measure(url, now, options.runs, size)
                )
            finally:
                if kind == "postgres":
                    drop_schema(options.pg, schema)
        stats_s = statistics.median(stats_times)
        list_s = statistics.median(list_times)
        table.add(
            kind, f"{filled:.0f} s", f"{stats_s:.2f} s", f"{list_s * 1000:.1f} ms", num(counted)
        )
        at = f" at {num(size)}" if options.quick else ""
        targets.append(
            Target(
                "stats",
                f"stats --since 30d on {kind} < {STATS_TARGET[kind]:g} s (1M)",
                f"{stats_s:.2f} s{at}",
                None if options.quick else stats_s < STATS_TARGET[kind],
            )
        )
        targets.append(
            Target(
                "stats",
                f"deliveries --recipient X on {kind} < 50 ms (1M)",
                f"{list_s * 1000:.1f} ms{at}",
                None if options.quick else list_s < LIST_TARGET,
            )
        )
    table.notes.append(
        "Medians: stats of the runs, the list of 20 recipients. Bulk rows as the engine "
        "leaves them, 30 days, 100,000 recipients, about 1.6 attempts a delivery."
    )
    return Result([table], targets)
