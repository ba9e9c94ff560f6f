"""Section: what the learned order's read costs `send()`, with many recipients known.

The store's channel history is filled in bulk (one transaction of `executemany` on
SQLite, `COPY` on PostgreSQL): N recipients, each with three channels heard of (WhatsApp
reached them, Viber read, Telegram failed them). Then `send()` is timed one call after
another (no worker: only the call, the history read and `Store.create`), two ways
taking turns call by call:

- **fixed**: a policy with `order: fixed` (the store is not asked: the floor);
- **learned**: the same steps with `order: learned`: one indexed read of the
  recipient's history (`Learning.history`), the steps reordered, the order recorded.

Recipients are drawn at random from the N, so the reads do not ride one hot page.
Target: the learned order's read adds under 10% to `send` on SQLite and PostgreSQL at
1,000,000 recipients with history (`--quick`: 100,000).
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

from benchmarks._common import Options, Result, Spread, Table, Target, drop_schema, pg_url, say

POLICY = """
store: STORE
providers:
  wa: {type: fake, channel: whatsapp, behavior: no_receipt}
  tg: {type: fake, channel: telegram, behavior: no_receipt}
  vb: {type: fake, channel: viber, behavior: no_receipt}
  sms: {type: fake, channel: sms, behavior: no_receipt}
policies:
  fixed:
    brakes: {sms_per_recipient_per_hour: null}
    steps: &steps
      - {channel: whatsapp, providers: [wa], wait_for: accepted}
      - {channel: telegram, providers: [tg], wait_for: accepted}
      - {channel: viber, providers: [vb], wait_for: accepted}
      - {channel: sms, providers: [sms], wait_for: accepted, keep_place: true}
  learned:
    order: learned
    brakes: {sms_per_recipient_per_hour: null}
    steps: *steps
default_policy: fixed
"""
NOW = 1_767_225_600.0
WAYS = ("fixed", "learned")
_BONUS = 7 * 86400.0


def _rows(count: int) -> Iterator[tuple[Any, ...]]:
    for index in range(count):
        who = f"r{index}"
        yield (who, "whatsapp", NOW - 3600.0, NOW - 3600.0, None)
        yield (who, "viber", NOW - 86400.0 + _BONUS, NOW - 86400.0, None)
        yield (who, "telegram", None, None, NOW - 7200.0)


def fill_sqlite(path: str, count: int) -> None:
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO channel_history (recipient_id, channel, rank, reached_ts, failed_ts) "
            "VALUES (?, ?, ?, ?, ?)",
            _rows(count),
        )
        conn.execute("ANALYZE")
    conn.close()


def fill_postgres(dsn: str, schema: str, count: int) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        with (
            conn.cursor() as cur,
            cur.copy(
                f'COPY "{schema}".channel_history '  # type: ignore[arg-type]
                "(recipient_id, channel, rank, reached_ts, failed_ts) FROM STDIN"
            ) as copy,
        ):
            for row in _rows(count):
                copy.write_row(row)
        conn.execute(f'ANALYZE "{schema}".channel_history')  # type: ignore[arg-type]


async def timed(url: str, count: int, sends: int) -> dict[str, float]:
    """Microseconds per `send()` each way: the median of `sends` calls each, the ways
    taking turns call by call (so a busy moment of the machine costs them alike)."""
    from cascade_notify import Message, Notifier, Recipient, load_config

    notifier = Notifier(load_config(POLICY.replace("STORE", url)), worker=False)
    pick = random.Random(7)
    text = Message(text="Your parcel has arrived.")
    took: dict[str, list[float]] = {way: [] for way in WAYS}
    async with notifier:
        for _ in range(sends):
            for way in WAYS:
                n = pick.randrange(count)
                recipient = Recipient(
                    id=f"r{n}",
                    whatsapp=f"+7916{n % 10_000_000:07d}",
                    telegram=str(1_000_000_000 + n),
                    viber=f"v{n}",
                    sms=f"+7916{n % 10_000_000:07d}",
                )
                started = time.perf_counter()
                made = await notifier.send(recipient, text, policy=way)
                took[way].append((time.perf_counter() - started) * 1e6)
                if way == "learned" and made.steps[0].channel != "viber":
                    raise RuntimeError(f"learned: the history was not read ({made.order})")
    return {way: Spread.of(values).median for way, values in took.items()}


def run(options: Options) -> Result:
    size = 100_000 if options.quick else 1_000_000
    sends = 200 if options.quick else 2_000
    stores = [s for s in ("sqlite", "postgres") if options.has(s)]
    figures: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for store in stores:
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            url = f"sqlite:///{tmp}/learned.db" if store == "sqlite" else pg_url(options.pg, schema)
            try:
                asyncio.run(_create(url))
                began = time.monotonic()
                if store == "sqlite":
                    fill_sqlite(f"{tmp}/learned.db", size)
                else:
                    fill_postgres(options.pg, schema, size)
                say(f"  learned: {size} recipients' history on {store} in "
                    f"{time.monotonic() - began:.0f} s")  # fmt: skip
                for number in range(options.runs):
                    medians = asyncio.run(timed(url, size, sends))
                    for way, micros in medians.items():
                        figures.setdefault((store, way), []).append(micros)
                    shown = ", ".join(f"{w} {v:.0f} µs" for w, v in medians.items())
                    say(f"  learned run {number + 1} {store}: {shown}")
            finally:
                if store == "postgres":
                    drop_schema(options.pg, schema)
    table = Table(
        f"Learned order: µs per `send()` with {size:,} recipients with history "
        f"({options.runs} runs of {sends} sends per way, one at a time, no worker)",
        ["store", *WAYS, "learned adds"],
    )
    targets = []
    for store in stores:
        spreads = {way: Spread.of(figures[(store, way)]) for way in WAYS}
        floor = spreads["fixed"].median
        added = (spreads["learned"].median - floor) / floor * 100
        table.add(store, *(spreads[w].text(" µs") for w in WAYS), f"{added:+.1f}%")
        targets.append(
            Target(
                "learned",
                f"{store}: the learned order's read adds < 10% to send at {size:,}",
                f"{added:+.1f}%",
                added < 10.0,
            )
        )
    table.notes.append(
        "`fixed`: order: fixed, the store is not asked; `learned`: the same four steps with "
        "order: learned, one read of the recipient's history (three channels each) per send, "
        "the steps reordered and the order recorded with the delivery. The two take turns "
        "send by send; each figure is the median of the runs' medians. The read comes in the "
        "create's own store call: on SQLite inside its write transaction, on PostgreSQL one "
        "read statement on the insert's connection."
    )
    return Result([table], targets)


async def _create(url: str) -> None:
    from cascade_notify.stores import open_store

    store = open_store(url)
    await store.open()
    await store.close()
