"""Section: what looking addresses up costs `send()`, with 1,000,000 linked recipients.

The store's address table is filled in bulk (one transaction of `executemany` on
SQLite, `COPY` on PostgreSQL) with N recipients, each linked to a Telegram chat. Then
`send()` is timed, one call after another (the notifier runs no worker, so only the
call itself is measured: the lookup and `Store.create`), three ways taking turns:

- **no lookup**: the recipient's chat id is given and no provider of the policy reports
  addresses, so the store is not asked (the floor);
- **by id**: the recipient is known by id only; a provider reports addresses, so the
  notifier asks the store what it knows of the id (`known`, one indexed query) and
  fills the chat id in;
- **given, checked**: the chat id is given and checked against the gone ones
  (`unusable`, one primary-key query).

Recipients are drawn at random from the N, so the lookups do not ride one hot page.
Target: each lookup adds under 10% to `send` on SQLite and PostgreSQL at 1,000,000.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

from benchmarks._common import Options, Result, Spread, Table, Target, drop_schema, pg_url, say

POLICY = """
store: STORE
providers:
  tg: {type: fake, channel: telegram, behavior: deliver}
  tg_reporting: {type: fake, channel: telegram, behavior: deliver}
  sms: {type: fake, channel: sms}
policies:
  floor:
    brakes: {sms_per_recipient_per_hour: null}
    steps:
      - {channel: telegram, providers: [tg], wait_for: accepted}
      - {channel: sms, providers: [sms], wait_for: accepted}
  lookup:
    brakes: {sms_per_recipient_per_hour: null}
    steps:
      - {channel: telegram, providers: [tg_reporting], wait_for: accepted}
      - {channel: sms, providers: [sms], wait_for: accepted}
default_policy: floor
"""
NOW = 1_767_225_600.0
MODES = ("no lookup", "by id", "given, checked")


def _rows(count: int) -> Iterator[tuple[Any, ...]]:
    for index in range(count):
        yield ("telegram", str(1_000_000_000 + index), "linked", "start", "tg", NOW, f"r{index}")


def fill_sqlite(path: str, count: int) -> None:
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO addresses (channel, address, state, reason, provider, ts, recipient_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
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
                f'COPY "{schema}".addresses '  # type: ignore[arg-type]
                "(channel, address, state, reason, provider, ts, recipient_id) FROM STDIN"
            ) as copy,
        ):
            for row in _rows(count):
                copy.write_row(row)
        conn.execute(f'ANALYZE "{schema}".addresses')  # type: ignore[arg-type]


async def timed(url: str, count: int, sends: int) -> dict[str, float]:
    """Microseconds per `send()` in each mode: the median of `sends` calls each, the modes
    taking turns call by call (so a busy moment of the machine costs them alike)."""
    from cascade_notify import Message, Notifier, Recipient, load_config
    from cascade_notify.testing import FakeProvider

    class Reporting(FakeProvider):
        signals: ClassVar[bool] = True  # its policy's sends ask the store of addresses

    config = load_config(POLICY.replace("STORE", url))
    reporting = Reporting("tg_reporting", config.providers["tg_reporting"].settings)
    notifier = Notifier(config, worker=False, providers={"tg_reporting": reporting})
    pick = random.Random(7)
    text = Message(text="Your parcel has arrived.")
    took: dict[str, list[float]] = {mode: [] for mode in MODES}
    async with notifier:
        for _ in range(sends):
            for mode in MODES:
                n = pick.randrange(count)
                chat = str(1_000_000_000 + n)
                recipient = (
                    Recipient(id=f"r{n}")
                    if mode == "by id"
                    else Recipient(id=f"r{n}", telegram=chat)
                )
                policy = "floor" if mode == "no lookup" else "lookup"
                started = time.perf_counter()
                made = await notifier.send(recipient, text, policy=policy)
                took[mode].append((time.perf_counter() - started) * 1e6)
                if made.recipient.telegram != chat:
                    raise RuntimeError(f"{mode}: the send went without the chat id")
    return {mode: Spread.of(values).median for mode, values in took.items()}


def run(options: Options) -> Result:
    size = 10_000 if options.quick else 1_000_000
    sends = 100 if options.quick else 2_000
    stores = [s for s in ("sqlite", "postgres") if options.has(s)]
    figures: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for store in stores:
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            url = (
                f"sqlite:///{tmp}/addresses.db" if store == "sqlite" else pg_url(options.pg, schema)
            )
            try:
                asyncio.run(_create(url))
                began = time.monotonic()
                if store == "sqlite":
                    fill_sqlite(f"{tmp}/addresses.db", size)
                else:
                    fill_postgres(options.pg, schema, size)
                say(f"  addresses: {size} linked on {store} in {time.monotonic() - began:.0f} s")
                for number in range(options.runs):
                    medians = asyncio.run(timed(url, size, sends))
                    for mode, micros in medians.items():
                        figures.setdefault((store, mode), []).append(micros)
                    shown = ", ".join(f"{m} {v:.0f} µs" for m, v in medians.items())
                    say(f"  addresses run {number + 1} {store}: {shown}")
            finally:
                if store == "postgres":
                    drop_schema(options.pg, schema)
    table = Table(
        f"Address lookup: µs per `send()` with {size:,} linked recipients "
        f"({options.runs} runs of {sends} sends per way, one at a time, no worker)",
        ["store", *MODES, "by id adds", "checked adds"],
    )
    targets = []
    for store in stores:
        spreads = {mode: Spread.of(figures[(store, mode)]) for mode in MODES}
        floor = spreads["no lookup"].median
        added = {m: (spreads[m].median - floor) / floor * 100 for m in MODES[1:]}
        table.add(
            store,
            *(spreads[m].text(" µs") for m in MODES),
            f"{added['by id']:+.1f}%",
            f"{added['given, checked']:+.1f}%",
        )
        for mode in MODES[1:]:
            targets.append(
                Target(
                    "addresses",
                    f"{store}: lookup ({mode}) adds < 10% to send at {size:,}",
                    f"{added[mode]:+.1f}%",
                    added[mode] < 10.0,
                )
            )
    table.notes.append(
        "`no lookup`: chat id given, no provider reports addresses; `by id`: Recipient(id=…) "
        "only, the chat id found by `known(recipient_id)`; `given, checked`: chat id given and "
        "looked up among the gone (`unusable`). The three take turns send by send; each figure "
        "is the median of the runs' medians. The lookups come in the create's own store call: "
        "on SQLite inside its write transaction, on PostgreSQL one read statement on the "
        "insert's connection."
    )
    return Result([table], targets)


async def _create(url: str) -> None:
    from cascade_notify.stores import open_store

    store = open_store(url)
    await store.open()
    await store.close()
