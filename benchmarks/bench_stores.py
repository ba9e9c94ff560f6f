"""Deliveries per second on each store, and memory against the number of deliveries pending.

    python benchmarks/bench_stores.py [--deliveries 2000] [--runs 5] [--pg DSN]
    python benchmarks/bench_stores.py --rss [--pending 1000 100000] [--pg DSN]

Throughput: each run starts a notifier (system clock, worker on, default worker
settings) on each store in turn, side by side (memory, SQLite in a temporary
file with synchronous=FULL, PostgreSQL in a fresh schema), sends `--deliveries`
deliveries 100 at a time, as a busy web app would, whose one step is a fake
WhatsApp that accepts and reports `delivered` at once, and times the first
send to the last delivery finished. The median of the runs is reported.

RSS: for SQLite and PostgreSQL, fills a store with N deliveries that are sent
and wait for a receipt that never comes (a one-day deadline), then starts a
fresh process that runs a worker on that store for a few seconds and reports
its resident memory: it must not grow with N.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from cascade_notify import Message, Notifier, Recipient, load_config
from cascade_notify.events import Event

PG = os.environ.get("CASCADE_NOTIFY_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
POLICY = """
store: {store}
providers:
  wa: {{type: fake, channel: whatsapp, behavior: {behavior}}}
policies:
  p: {{ttl: 2d, steps: [{{channel: whatsapp, providers: [wa], timeout: 1d}}]}}
"""
RECIPIENT = Recipient(id="r", whatsapp="+79161234567")


async def run(store: str, n: int, behavior: str, until: str) -> float:
    """Send `n` deliveries on `store`; return seconds until `n` events of kind `until`."""
    notifier = Notifier(load_config(POLICY.format(store=store, behavior=behavior)))
    seen = 0
    done = asyncio.Event()

    def count(event: Event) -> None:
        nonlocal seen
        if event.kind == until:
            seen += 1
            if seen == n:
                done.set()

    notifier.subscribe(count)
    async with notifier:
        started = time.perf_counter()
        for first in range(0, n, 100):
            chunk = range(first, min(n, first + 100))
            await asyncio.gather(*(notifier.send(RECIPIENT, Message(text=f"#{i}")) for i in chunk))
        await done.wait()
        return time.perf_counter() - started


def drop_schema(dsn: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')  # type: ignore[arg-type]


def throughput(args: argparse.Namespace) -> None:
    rates: dict[str, list[float]] = {"memory": [], "sqlite": [], "postgres": []}
    for number in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            urls = {"memory": "memory://", "sqlite": f"sqlite:///{tmp}/bench.db"}
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            if args.pg:
                urls["postgres"] = f"{args.pg}?schema={schema}"
            try:
                for name, url in urls.items():
                    seconds = asyncio.run(run(url, args.deliveries, "deliver", "finished"))
                    rates[name].append(args.deliveries / seconds)
                    print(
                        f"run {number + 1} {name:>8}: {args.deliveries / seconds:8.0f}/s",
                        flush=True,
                    )
            finally:
                if args.pg:
                    drop_schema(args.pg, schema)
    print(
        f"\ndeliveries per second, median of {args.runs} runs of {args.deliveries} "
        "(instant fake receipts, one step):"
    )
    for name, values in rates.items():
        if values:
            print(
                f"  {name:>8}: {statistics.median(values):8.0f}  "
                f"(runs: {', '.join(f'{v:.0f}' for v in values)})"
            )


def measure(store: str, seconds: float) -> None:
    """In a fresh process: run a worker on `store` for `seconds`; print RSS as JSON."""

    async def idle() -> None:
        async with Notifier(load_config(POLICY.format(store=store, behavior="no_receipt"))):
            await asyncio.sleep(seconds)

    asyncio.run(idle())
    status = Path("/proc/self/status").read_text()
    fields = {
        line.split(":")[0]: line.split()[1]
        for line in status.splitlines()
        if line.startswith(("VmRSS", "VmHWM"))
    }
    print(json.dumps({"rss_kib": int(fields["VmRSS"]), "peak_kib": int(fields["VmHWM"])}))


def rss(args: argparse.Namespace) -> None:
    print("RSS of a worker process on a store with N deliveries waiting for receipts:")
    for kind in ("sqlite", "postgres"):
        if kind == "postgres" and not args.pg:
            continue
        for pending in args.pending:
            with tempfile.TemporaryDirectory() as tmp:
                schema = f"bench_{uuid.uuid4().hex[:8]}"
                url = (
                    f"sqlite:///{tmp}/rss.db" if kind == "sqlite" else f"{args.pg}?schema={schema}"
                )
                try:
                    fill = asyncio.run(run(url, pending, "no_receipt", "outcome"))
                    out = subprocess.run(
                        [sys.executable, __file__, "--measure", url],
                        check=True,
                        capture_output=True,
                        text=True,
                    ).stdout
                    found = json.loads(out.strip().splitlines()[-1])
                finally:
                    if kind == "postgres":
                        drop_schema(args.pg, schema)
            print(
                f"  {kind:>8} {pending:>7} pending: RSS {found['rss_kib'] / 1024:6.1f} MiB, "
                f"peak {found['peak_kib'] / 1024:6.1f} MiB (filled at {pending / fill:.0f}/s)",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pg", default=PG, help="PostgreSQL DSN; empty to skip it")
    parser.add_argument("--rss", action="store_true", help="measure memory against pending")
    parser.add_argument("--pending", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, 5.0)
    elif args.rss:
        rss(args)
    else:
        throughput(args)


if __name__ == "__main__":
    main()
