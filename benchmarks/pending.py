"""Section 3: deliveries waiting for receipts, by the thousand and the million.

For each store and each size N, one process holds a store with N deliveries
pending: each accepted by a fake WhatsApp and waiting a day for a receipt, as
the engine leaves them (policy of `bench_stores.py`, `behavior: no_receipt`).

- memory: the process fills its own store through the library (`send`, then the
  engine advances each to its wait), so its RSS holds them: bytes per pending
  delivery = (RSS after the fill - RSS before) / N, each recipient and message
  its own object as in a real application;
- SQLite, PostgreSQL: the runner writes the N rows in bulk beforehand (the
  store's own row encoding, `stores._codec`, of the same objects the engine
  would write), then a fresh process opens the store: its RSS must not depend
  on N.

All processes stay up, and the runner asks each in turn, round after round
(so the sizes are measured side by side), for:

- tick: one idle look of a worker at the store, `claim()` (nothing due) and
  `next_wake()`, median of 20;
- send: `send()` (worker off, so the persist alone), one at a time, mean of S;
- receipt: `record_receipts()` of one `delivered` receipt for a random waiting
  delivery, one at a time, mean of S;

then, untimed, the engine advances what the round made due (the S receipts
finish S deliveries, the S sends go to their wait), so N stays N.

    python -m benchmarks.pending child <store> <url> <size> <max_seconds>

is one such process.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from typing import Any

from benchmarks import bench_stores
from benchmarks._common import (
    Child,
    Options,
    Result,
    Spread,
    Table,
    Target,
    available_kib,
    drop_schema,
    num,
    pg_url,
    reply,
    rss_kib,
    say,
)

TTL, TIMEOUT = 2 * 86400.0, 86400.0
BATCH = 2000


def message_id(store: str, index: int) -> str:
    """The provider message id of the nth bulk-written row (SQL stores): ids of their own,
    so the child's fake (numbering wa-<tag>-1, wa-<tag>-2...) never gives one of its new
    messages the id of a bulk one."""
    return f"wa-bulk-{index}"


def recipient(index: int) -> Any:
    from cascade_notify import Recipient

    return Recipient(id=f"customer-{index}", whatsapp=f"+7916{index % 10_000_000:07d}")


def message(index: int) -> Any:
    from cascade_notify import Message

    return Message(
        text=f"Your parcel {index} has arrived at the pick-up point; code {index % 9973}"
    )


def config(url: str) -> Any:
    from cascade_notify import load_config

    return load_config(bench_stores.POLICY.format(store=url, behavior="no_receipt"))


# the child


async def drain(notifier: Any, engine: Any) -> int:
    """Advance everything due until nothing is; return how many claims that took."""
    total = 0
    while True:
        claims = await notifier.store.claim(time.time(), limit=BATCH, lease=30.0)
        if not claims:
            return total
        total += len(claims)
        await asyncio.gather(*(engine.advance(c) for c in claims))
        notifier.providers["wa"].calls.clear()  # the fake keeps every call; we need none


async def fill_memory(notifier: Any, engine: Any, size: int, deadline: float) -> None:
    for first in range(0, size, BATCH):
        for index in range(first, min(size, first + BATCH)):
            await notifier.send(recipient(index), message(index))
        await drain(notifier, engine)
        if time.monotonic() > deadline:
            raise TimeoutError(f"filling {size:,} took too long")


async def child(store_kind: str, url: str, size: int, max_seconds: float) -> None:
    from cascade_notify import Notifier
    from cascade_notify.models import Receipt, ReceiptStatus

    deadline = time.monotonic() + max_seconds
    notifier = Notifier(config(url), worker=False)
    await notifier.start()
    # the notifier's own engine, as its worker would run it (there is no public call that
    # advances what is due without starting the worker loop, which would also run during
    # the timed sends and receipts)
    engine = notifier._engine
    gc.collect()
    before = rss_kib()
    started = time.perf_counter()
    if store_kind == "memory":
        try:
            await fill_memory(notifier, engine, size, deadline)
        except TimeoutError as exc:
            reply({"error": str(exc)})
            await notifier.stop()
            return
    fill = time.perf_counter() - started
    # one idle tick as a worker would make once the fill's leases lapsed (30 s on): a store
    # may keep a lease's timer until then, which no delivery waiting a day still has
    await notifier.store.claim(time.time() + 31.0, limit=100, lease=30.0)
    await notifier.store.next_wake()
    gc.collect()
    reply({"ready": True, "rss_before_kib": before, "rss_kib": rss_kib(), "fill_seconds": fill})
    # one fresh random waiting delivery per receipt, never the same twice
    chosen = iter(random.Random(size).sample(range(size), min(size, 20_000)))
    extra = size
    loop = asyncio.get_running_loop()
    while time.monotonic() < deadline:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line.strip():
            break
        count = int(json.loads(line)["count"])
        ticks = []
        for _ in range(20):
            begun = time.perf_counter()
            claims = await notifier.store.claim(time.time(), limit=100, lease=30.0)
            await notifier.store.next_wake()
            ticks.append(time.perf_counter() - begun)
            if claims:
                raise RuntimeError(f"{len(claims)} deliveries were due in an idle tick")
        begun = time.perf_counter()
        for _ in range(count):
            await notifier.send(recipient(extra), message(extra))
            extra += 1
        send = (time.perf_counter() - begun) / count
        unmatched = 0
        begun = time.perf_counter()
        for _ in range(count):
            index = next(chosen)
            [result] = await notifier.record_receipts(
                [
                    Receipt(
                        provider="wa",
                        provider_message_id=(
                            # the fake tags its ids per instance: ask it for the nth one
                            notifier.providers["wa"]._message_id(index + 1)
                            if store_kind == "memory"
                            else message_id(store_kind, index + 1)
                        ),
                        status=ReceiptStatus.DELIVERED,
                        ts=time.time(),
                    )
                ]
            )
            unmatched += result.delivery_id is None or result.duplicate
        receipt = (time.perf_counter() - begun) / count
        advanced = await drain(notifier, engine)
        reply(
            {
                "tick_us": statistics.median(ticks) * 1e6,
                "send_us": send * 1e6,
                "receipt_us": receipt * 1e6,
                "unmatched": unmatched,
                "advanced": advanced,
                "rss_kib": rss_kib(),
            }
        )
    await notifier.stop()


# bulk filling the SQL stores (in the runner)


def rows(size: int) -> Any:
    """(delivery row, attempt row) batches for `size` deliveries waiting as the engine
    leaves them: step 0, one attempt accepted with a provider message id, timer at its
    deadline."""
    from cascade_notify.models import Attempt, AttemptStatus, Delivery, new_id
    from cascade_notify.stores._codec import attempt_values, delivery_values

    steps = config("memory://").policies["p"].steps
    for first in range(0, size, 10_000):
        now = time.time()
        deliveries, attempts = [], []
        for index in range(first, min(size, first + 10_000)):
            delivery = Delivery(
                id=new_id(),
                policy="p",
                recipient=recipient(index),
                message=message(index),
                steps=steps,
                created_ts=now,
                expires_ts=now + TTL,
                wake_ts=now + TIMEOUT,
            )
            attempt = Attempt(
                id=new_id(),
                delivery_id=delivery.id,
                step=0,
                channel="whatsapp",
                provider="wa",
                status=AttemptStatus.ACCEPTED,
                started_ts=now,
                deadline_ts=now + TIMEOUT,
                provider_message_id=message_id("sql", index + 1),
            )
            deliveries.append((*delivery_values(delivery), 0, 1))
            attempts.append(attempt_values(attempt))
        yield deliveries, attempts


async def _create_schema(url: str) -> None:
    from cascade_notify.stores import open_store

    store = open_store(url)
    await store.open()
    await store.close()


def fill_sqlite(path: str, size: int) -> None:
    import sqlite3

    from cascade_notify.stores._codec import ATTEMPT_COLUMNS, DELIVERY_COLUMNS

    asyncio.run(_create_schema(f"sqlite:///{path}"))
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
    for deliveries, attempts in rows(size):
        conn.execute("BEGIN")
        conn.executemany(d_sql, deliveries)
        conn.executemany(a_sql, attempts)
        conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


def fill_postgres(dsn: str, schema: str, size: int) -> None:
    import psycopg

    from cascade_notify.stores._codec import ATTEMPT_COLUMNS, DELIVERY_COLUMNS

    asyncio.run(_create_schema(pg_url(dsn, schema)))
    with psycopg.connect(dsn, autocommit=True, options=f"-c search_path={schema}") as conn:
        for deliveries, attempts in rows(size):
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


# the section


def run(options: Options) -> Result:
    count = 50 if options.quick else 200
    stores = [s for s in ("memory", "sqlite", "postgres") if options.has(s)]
    figures: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    ready: dict[tuple[str, int], dict[str, Any]] = {}
    skipped: dict[tuple[str, int], str] = {}
    problems: list[str] = []
    children: dict[tuple[str, int], Child] = {}
    schemas: list[str] = []
    limit = 900.0 if options.quick else 3600.0
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for store in stores:
                for size in options.sizes:
                    key = (store, size)
                    reason = _too_big(store, size, options)
                    if reason:
                        skipped[key] = reason
                        continue
                    begun = time.monotonic()
                    if store == "memory":
                        url = "memory://"
                    elif store == "sqlite":
                        url = f"sqlite:///{tmp}/pending{size}.db"
                        fill_sqlite(url.removeprefix("sqlite:///"), size)
                    else:
                        schema = f"bench_pending_{uuid.uuid4().hex[:8]}"
                        schemas.append(schema)
                        url = pg_url(options.pg, schema)
                        fill_postgres(options.pg, schema, size)
                    child = Child("pending", "child", store, url, size, limit)
                    children[key] = child
                    try:
                        found = child.read(limit)
                    except RuntimeError as exc:
                        found = {"error": f"failed: {exc}"}
                    if "error" in found:
                        skipped[key] = found["error"]
                        child.close()
                        del children[key]
                        continue
                    ready[key] = found
                    if store != "memory":
                        found["fill_seconds"] = time.monotonic() - begun
                    say(
                        f"  pending {store} {size:,}: filled in {found['fill_seconds']:.0f} s, "
                        f"RSS {found['rss_kib'] / 1024:.0f} MiB"
                    )
            for number in range(options.runs):
                for key, child in list(children.items()):
                    try:
                        found = child.ask({"count": count}, 600)
                    except RuntimeError as exc:  # its process died: the others go on
                        problems.append(f"{key[0]} {key[1]:,} failed in round {number + 1}: {exc}")
                        skipped[key] = f"failed in round {number + 1}"
                        child.close()
                        del children[key], ready[key]
                        continue
                    for name in ("tick_us", "send_us", "receipt_us", "rss_kib"):
                        figures[key][name].append(found[name])
                    if found["unmatched"]:
                        problems.append(
                            f"{key[0]} {key[1]:,}: {found['unmatched']} receipts unmatched"
                        )
                    say(
                        f"  pending run {number + 1} {key[0]} {key[1]:,}: tick "
                        f"{found['tick_us']:.0f} µs, send {found['send_us']:.0f} µs, receipt "
                        f"{found['receipt_us']:.0f} µs, RSS {found['rss_kib'] / 1024:.0f} MiB"
                    )
        finally:
            for child in children.values():
                child.close()
            for schema in schemas:
                drop_schema(options.pg, schema)
    return _report(options, count, stores, figures, ready, skipped, problems)


def _too_big(store: str, size: int, options: Options) -> str | None:
    if store == "memory":
        need = size * 4  # KiB: twice the 2 KB target per delivery, and the fill's garbage
        if need > available_kib() * 0.6:
            return f"skipped: needs about {need / 1024 / 1024:.1f} GiB, not free"
    if options.quick and size > 100_000:
        return "skipped in --quick"
    return None


def _report(
    options: Options,
    count: int,
    stores: list[str],
    figures: dict[tuple[str, int], dict[str, list[float]]],
    ready: dict[tuple[str, int], dict[str, Any]],
    skipped: dict[tuple[str, int], str],
    problems: list[str],
) -> Result:
    table = Table(
        f"3. Waiting deliveries: cost against the number pending, median (min–max) of "
        f"{options.runs} rounds ({count} sends and {count} receipts a round)",
        [
            "store",
            "pending",
            "fill",
            "RSS MiB",
            "bytes/pending",
            "tick µs",
            "send µs",
            "send ÷ smallest",
            "receipt µs",
            "receipt ÷ smallest",
        ],
    )
    targets: list[Target] = []
    for store in stores:
        smallest: dict[str, float] = {}
        rss_by_size: dict[int, float] = {}
        for size in options.sizes:
            key = (store, size)
            if key in skipped:
                table.add(store, f"{size:,}", skipped[key], *["—"] * 7)
                continue
            if key not in ready:
                continue
            got, start = figures[key], ready[key]
            send, receipt = Spread.of(got["send_us"]), Spread.of(got["receipt_us"])
            smallest.setdefault("send", send.median)
            smallest.setdefault("receipt", receipt.median)
            rss = Spread.of(v / 1024 for v in got["rss_kib"])
            rss_by_size[size] = rss.median
            per = (start["rss_kib"] - start["rss_before_kib"]) * 1024 / size
            table.add(
                store,
                f"{size:,}",
                f"{start['fill_seconds']:.0f} s",
                rss.text(digits=0),
                num(per) if store == "memory" else "—",
                Spread.of(got["tick_us"]).text(digits=0),
                send.text(digits=0),
                f"{send.median / smallest['send']:.2f}×",
                receipt.text(digits=0),
                f"{receipt.median / smallest['receipt']:.2f}×",
            )
            if store == "memory" and size == max(s for s in options.sizes if (store, s) in ready):
                targets.append(
                    Target(
                        "pending",
                        f"memory: < 2 KB RSS per pending delivery at {size:,}",
                        f"{per:,.0f} B",
                        per < 2048,
                    )
                )
        if store != "memory" and len(rss_by_size) > 1:
            low, high = min(rss_by_size), max(rss_by_size)
            grew = rss_by_size[high] - rss_by_size[low]
            targets.append(
                Target(
                    "pending",
                    f"{store}: RSS flat from {low:,} to {high:,} pending",
                    f"{grew:+.1f} MiB",
                    abs(grew) < 16,
                )
            )
        sends = {
            s: Spread.of(figures[store, s]["send_us"]).median
            for s in options.sizes
            if (store, s) in ready
        }
        if 10_000 in sends and 1_000_000 in sends:
            growth = sends[1_000_000] / sends[10_000]
            targets.append(
                Target(
                    "pending",
                    f"{store}: send at 1,000,000 pending ≤ 1.2× its cost at 10,000",
                    f"{growth:.2f}×",
                    growth <= 1.2,
                )
            )
        elif 1_000_000 in options.sizes:
            targets.append(
                Target(
                    "pending",
                    f"{store}: send at 1,000,000 pending ≤ 1.2× its cost at 10,000",
                    skipped.get((store, 1_000_000), "not measured"),
                    None,
                )
            )
    table.notes.append(
        "RSS: of the process holding the store (memory) or of a fresh process that opened it "
        "(SQLite, PostgreSQL; rows written in bulk beforehand, `fill` includes that). "
        "tick: `claim()` finding nothing due plus `next_wake()`. send: `send()` with the worker "
        "off. receipt: `record_receipts()` of one receipt. SQLite at synchronous=FULL: a send or "
        "a receipt alone is a commit, an fsync."
    )
    if problems:
        table.notes.append("PROBLEMS: " + "; ".join(problems))
    return Result([table], targets)


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        _, _, kind, url, size, seconds = sys.argv
        asyncio.run(child(kind, url, int(size), float(seconds)))
    else:
        raise SystemExit("usage: python -m benchmarks.pending child <store> <url> <size> <max_s>")
