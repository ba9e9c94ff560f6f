"""Section "bulk": sends by the thousand, and a one-time code during a bulk run.

For SQLite and PostgreSQL (and memory, for the floor), in one process:

- persist: N deliveries stored by `send_many` (batches of 500, one transaction each)
  against `send` calls one after another (the loop users write today; 5,000 of them,
  after the N, a rate that does not depend on the count), worker off, so the persist
  alone; deliveries per second of each, and the ratio
  (target: `send_many` at least 5x faster);
- high during bulk: N bulk deliveries stored, then the worker started on them
  (fake e-mail provider, 2 ms a send, concurrency 100); once it is busy, a `high`
  delivery is sent every 50 ms, K of them: the time from each `send` to its first
  attempt's start (target: p99 under 1 s).

Real time (the system clock); N is 100,000 in a full run, 2,000 with `--quick`.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks._common import Options, Result, Table, Target, drop_schema, num, pg_url, say
from cascade_notify import Message, Notifier, Recipient, Send

POLICY = """
store: memory://
providers:
  mail: {type: fake, channel: email, latency: 2ms}
policies:
  mailing:
    priority: bulk
    steps: [{channel: email, providers: [mail], wait_for: accepted}]
  codes:
    priority: high
    steps: [{channel: email, providers: [mail], wait_for: accepted}]
default_policy: mailing
worker: {concurrency: 100, batch: 100}
"""
TEXT = Message(text="Your parcel is on its way.")
CODE = Message(text="Your code: 4711")


def _items(n: int, tag: str) -> list[Send]:
    return [
        Send(Recipient(id=f"c{i}", email=f"c{i}@example.com"), TEXT, idempotency_key=f"{tag}-{i}")
        for i in range(n)
    ]


async def _persist(url: str, n: int, loop_n: int) -> tuple[float, float]:
    """(send_many deliveries/s for `n`, send loop deliveries/s for `loop_n`) on a fresh
    store at `url`."""
    many = _items(n, "many")
    loop = _items(loop_n, "loop")
    async with Notifier.from_yaml(POLICY, store=url, worker=False) as notifier:
        begun = time.perf_counter()
        result = await notifier.send_many(many)
        batch_s = time.perf_counter() - begun
        assert result.ok and result.created == n, result.failures[:3]
        begun = time.perf_counter()
        for item in loop:
            await notifier.send(item.recipient, item.message, idempotency_key=item.idempotency_key)
        loop_s = time.perf_counter() - begun
    return n / batch_s, loop_n / loop_s


async def _high_during_bulk(url: str, n: int, k: int) -> list[float]:
    """Seconds from each of `k` high sends to its first attempt, during a bulk run of `n`."""
    async with Notifier.from_yaml(POLICY, store=url, worker=False) as filler:
        result = await filler.send_many(_items(n, "bulk"))
        assert result.ok
    latencies: list[float] = []
    async with Notifier.from_yaml(POLICY, store=url) as notifier:
        await asyncio.sleep(0.5)  # the worker is busy with the backlog
        for i in range(k):
            sent_at = notifier.clock.now()
            code = await notifier.send(
                Recipient(id=f"u{i}", email=f"u{i}@example.com"), CODE, policy="codes"
            )
            done = await notifier.wait(code.id, timeout=60)
            latencies.append(done.attempts[0].started_ts - sent_at)
            await asyncio.sleep(0.05)
    return latencies


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def run(options: Options) -> Result:
    n = 2_000 if options.quick else 100_000
    k = 10 if options.quick else 100
    loop_n = 500 if options.quick else 5_000
    persist = Table(
        f"bulk: persisting {n:,} deliveries by send_many, {loop_n:,} by a loop of send",
        ["store", "send_many /s", "send loop /s", "ratio"],
    )
    high = Table(
        f"bulk: a high send during a {n:,}-delivery bulk run ({k} sends)",
        ["store", "p50 ms", "p99 ms", "max ms"],
    )
    targets: list[Target] = []
    with tempfile.TemporaryDirectory() as folder:
        for store in ("memory", "sqlite", "postgres"):
            if not options.has(store):
                continue
            schemas: list[str] = []

            def url(name: str, store: str = store, schemas: list[str] = schemas) -> str:
                if store == "memory":
                    return "memory://"
                if store == "sqlite":
                    return f"sqlite:///{Path(folder) / f'{name}.db'}"
                schema = f"cn_bench_{uuid.uuid4().hex[:10]}"
                schemas.append(schema)
                return pg_url(options.pg, schema)

            try:
                say(f"bulk: {store} persist ...")
                batch_rate, loop_rate = asyncio.run(_persist(url("persist"), n, loop_n))
                ratio = batch_rate / loop_rate
                persist.add(store, num(batch_rate), num(loop_rate), f"{ratio:.1f}×")
                if store != "memory":
                    targets.append(
                        Target("bulk", f"{store}: send_many ≥ 5× a send loop", f"{ratio:.1f}×",
                               ratio >= 5)
                    )  # fmt: skip
                if store == "memory":
                    continue  # the memory store has no backlog worth the name to work
                say(f"bulk: {store} high during bulk ...")
                latencies = asyncio.run(_high_during_bulk(url("high"), n, k))
                p99 = _p99(latencies)
                high.add(
                    store,
                    num(statistics.median(latencies) * 1000, 1),
                    num(p99 * 1000, 1),
                    num(max(latencies) * 1000, 1),
                )
                targets.append(
                    Target("bulk", f"{store}: high during bulk, p99 < 1 s", f"{p99 * 1000:.0f} ms",
                           p99 < 1.0)
                )  # fmt: skip
            finally:
                for schema in schemas:
                    drop_schema(options.pg, schema)
    persist.notes.append(
        "Worker off: the persist alone. send_many writes batches of 500 in one transaction "
        "each; the loop awaits each send (one transaction, one commit each)."
    )
    high.notes.append(
        "From `send` to the first attempt's start, with the worker's 100 slots busy on the "
        "bulk backlog (2 ms a send)."
    )
    return Result([persist, high], targets)
