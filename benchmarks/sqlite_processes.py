"""Section 6: SQLite on one host, many processes: 4 sending processes and 2 workers on one file.

- `1 process`: `Notifier` with its worker, as section 1's SQLite row (`bench_stores.run`);
- `4 senders + 2 workers`: four send-only processes (`Notifier(worker=False)`, as web
  processes) each send a quarter of the deliveries 100 at a time, started together;
  two `cascade-notify worker`-like processes work them (told of the sends through the
  lock file, `Watchable`); the runner counts final deliveries every 20 ms on a read-only
  connection; the figure is deliveries over the time from the go to the last final;
- `send` latency: every send of the senders above (100 in flight each), and one web
  process sending one at a time while the two workers work its deliveries;
- ceilings: SQLite commits a second of one claim-and-complete transaction at the store's
  settings on one connection (as section 1), and the same from 6 processes taking turns
  on the store's lock (`benchmarks.sqlite_options`).

    python -m benchmarks.sqlite_processes sender <url> <count> <in_flight>

is one sending process.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import tempfile
import time
from collections import defaultdict

from benchmarks import bench_stores, sqlite_options
from benchmarks._common import (
    Child,
    Options,
    Result,
    Spread,
    Table,
    Target,
    num,
    ratio,
    reply,
    say,
)
from benchmarks.engine_overhead import sqlite_commits, sqlite_queue


async def sender_main(url: str, count: int, in_flight: int) -> None:
    from cascade_notify import Message, Notifier, load_config

    config = load_config(bench_stores.POLICY.format(store=url, behavior="deliver"))
    async with Notifier(config, worker=False) as notifier:
        reply({"ready": True})
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # the go
        latencies: list[float] = []

        async def one(index: int) -> None:
            began = time.perf_counter()
            await notifier.send(bench_stores.RECIPIENT, Message(text=f"#{index}"))
            latencies.append(time.perf_counter() - began)

        started = time.perf_counter()
        for first in range(0, count, in_flight):
            await asyncio.gather(*(one(i) for i in range(first, min(count, first + in_flight))))
        reply({"latencies": latencies, "seconds": time.perf_counter() - started})


def _final(path: str) -> int:
    # read-only: this connection never writes nor checkpoints, so it needs no turn on the lock
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        conn.execute("PRAGMA busy_timeout = 5000")
        row = conn.execute("SELECT count(*) FROM deliveries WHERE status <> 'pending'")
        return int(row.fetchone()[0])


def processes(
    path: str, senders: int, workers: int, count: int, in_flight: int
) -> dict[str, object]:
    """Deliveries a second of `senders` send-only and `workers` worker processes on one
    file, with every send's latency."""
    url = f"sqlite:///{path}"
    asyncio.run(_create(url))
    children: list[Child] = []
    try:
        for index in range(workers):
            children.append(Child("engine_overhead", "worker", url, index + 1, 600))
        share = count // senders
        sending = [
            Child("sqlite_processes", "sender", url, share, in_flight) for _ in range(senders)
        ]
        children.extend(sending)
        for child in children:
            child.read(60)
        started = time.perf_counter()
        for child in sending:
            assert child.process.stdin is not None
            child.process.stdin.write("go\n")
            child.process.stdin.flush()
        final = 0
        while final < share * senders:
            time.sleep(0.02)
            final = _final(path)
            if time.perf_counter() - started > 300:
                raise RuntimeError(f"only {final} of {count} final after 300 s")
        seconds = time.perf_counter() - started
        latencies = [x for child in sending for x in child.read(60)["latencies"]]
    finally:
        for child in children:
            child.close()
    return {"rate": share * senders / seconds, "latencies": latencies}


async def _create(url: str) -> None:
    from cascade_notify.stores import open_store

    store = open_store(url)
    await store.open()
    await store.close()


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


def run(options: Options) -> Result:
    count = 800 if options.quick else 6000
    rates: dict[str, list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        queue_db = f"{tmp}/ceiling.db"
        sqlite_queue(queue_db, 20_000 if options.quick else 200_000)
        for number in range(options.runs):
            label = f"  processes run {number + 1}:"
            one = asyncio.run(
                bench_stores.run(f"sqlite:///{tmp}/one{number}.db", count, "deliver", "finished")
            )
            rates["one"].append(count / one)
            many = processes(f"{tmp}/many{number}.db", 4, 2, count, 100)
            rates["many"].append(float(many["rate"]))  # type: ignore[arg-type]
            lat: list[float] = many["latencies"]  # type: ignore[assignment]
            rates["p50 loaded"].append(1000 * _quantile(lat, 0.5))
            rates["p99 loaded"].append(1000 * _quantile(lat, 0.99))
            web = processes(f"{tmp}/web{number}.db", 1, 2, 100 if options.quick else 500, 1)
            lat = web["latencies"]  # type: ignore[assignment]
            rates["p50 web"].append(1000 * _quantile(lat, 0.5))
            rates["p99 web"].append(1000 * _quantile(lat, 0.99))
            rates["commits"].append(sqlite_commits(queue_db, 0.5 if options.quick else 2.0))
            rates["commits 6"].append(
                sqlite_options.contention("flock", 6, 0.5 if options.quick else 2.0)["tps"]
            )
            say(
                f"{label} 1 process {rates['one'][-1]:,.0f}/s, 4+2 processes "
                f"{rates['many'][-1]:,.0f}/s, send p50 {rates['p50 loaded'][-1]:.1f} ms "
                f"p99 {rates['p99 loaded'][-1]:.1f} ms (100 in flight), one at a time "
                f"p50 {rates['p50 web'][-1]:.2f} ms p99 {rates['p99 web'][-1]:.2f} ms, "
                f"commits {rates['commits'][-1]:,.0f}/s, "
                f"6 processes {rates['commits 6'][-1]:,.0f}/s"
            )
    one, many = Spread.of(rates["one"]), Spread.of(rates["many"])
    commits, commits6 = Spread.of(rates["commits"]), Spread.of(rates["commits 6"])
    table = Table(
        f"6. SQLite, one host, many processes: deliveries/s send → fake → final, median "
        f"(min–max) of {options.runs} runs",
        [
            "setup",
            "deliveries",
            "deliveries/s",
            "÷ 1 process",
            "÷ raw commits (1 conn)",
            "÷ raw commits (6 procs)",
        ],
    )
    for name, spread in (
        ("1 process (worker inside)", one),
        ("4 sending + 2 worker processes", many),
    ):
        table.add(
            name,
            f"{count:,}",
            spread.text(),
            ratio(spread.median, one.median),
            ratio(spread.median, commits.median),
            ratio(spread.median, commits6.median),
        )
    table.add("ceiling: raw commits, 1 connection", "—", commits.text(" /s"), "—", "1.00×", "—")
    table.add(
        "ceiling: raw commits, 6 processes on the lock",
        "—",
        commits6.text(" /s"),
        "—",
        "—",
        "1.00×",
    )
    table.notes.append(
        f"`send` latency from a web process: p50 {Spread.of(rates['p50 web']).text(' ms', 2)}, "
        f"p99 {Spread.of(rates['p99 web']).text(' ms', 2)} sending one at a time beside 2 "
        f"workers; p50 {Spread.of(rates['p50 loaded']).text(' ms', 1)}, p99 "
        f"{Spread.of(rates['p99 loaded']).text(' ms', 1)} with 100 in flight in each of 4 "
        "senders (the 4 + 2 row; a call returns once its group committed, fsync included)."
    )
    table.notes.append(
        "Every transaction of every process takes its turn on one flock (`<file>-lock`): "
        "the processes' calls queue meanwhile and go into the next group, so the fsyncs, "
        "not the processes, bound the rate. A ratio above 1× to raw commits is grouping."
    )
    got = many.median / one.median if one.median else float("nan")
    target = Target(
        "processes",
        "4 senders + 2 workers ≥ 0.8× 1 process (same run)",
        f"{got:.2f}× ({num(many.median)}/s against {num(one.median)}/s)",
        got >= 0.8 if got == got else None,
    )
    return Result([table], [target])


if __name__ == "__main__":
    if sys.argv[1:2] == ["sender"]:
        asyncio.run(sender_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    else:
        raise SystemExit(
            "usage: python -m benchmarks.sqlite_processes sender <url> <count> <in_flight>"
        )
