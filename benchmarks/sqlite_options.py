"""How to let several processes write one SQLite file: the options, measured side by side.

    python -m benchmarks.sqlite_options [--seconds 3] [--processes 1,6]

Each of N processes runs claim-and-complete transactions (`BEGIN IMMEDIATE`, find a
row, update it, `COMMIT`, synchronous=FULL, WAL) on one file for `--seconds`, and
reports transactions and their latencies:

- `flock`: the stdlib `sqlite3` (the SQLite Python links) with every transaction
  under an exclusive `flock` on `<file>-lock` (the store's protocol, `lock.py`);
- `apsw`: `apsw` (a wheel bundling a current SQLite, with the WAL-reset fix), relying
  on SQLite's own locks and busy handler (`busy_timeout` 5 s), as any SQLite ≥ 3.51.3;
- `busy`: the stdlib `sqlite3` on SQLite's own locks: what the store must not do
  below 3.51.3 (the race), shown for the cost of SQLite's busy handler alone.

Then the CPU cost of the store's statement mix in one process, `sqlite3` against
`apsw`, with synchronous=OFF so that no fsync hides it. `apsw` is not a dependency:
`pip install apsw` to measure it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from typing import Any

ROWS = 200_000


def _prepare(path: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE q (id INTEGER PRIMARY KEY, done INTEGER NOT NULL DEFAULT 0)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO q (id) VALUES (?)", ((i,) for i in range(1, ROWS + 1)))
    conn.execute("COMMIT")
    conn.execute("CREATE INDEX q_due ON q (id) WHERE done = 0")
    conn.close()


def _connect(kind: str, path: str) -> Any:
    if kind == "apsw":
        import apsw

        conn = apsw.Connection(path)
        conn.set_busy_timeout(5000)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        return conn
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def _worker(kind: str, path: str, index: int, seconds: float, out: Any) -> None:
    import fcntl

    conn = _connect(kind, path)
    lock = os.open(f"{path}-lock", os.O_RDWR | os.O_CREAT, 0o644) if kind == "flock" else -1
    latencies: list[float] = []
    busy = 0
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        began = time.perf_counter()
        if lock >= 0:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            conn.execute("BEGIN IMMEDIATE")
        except Exception as exc:  # SQLITE_BUSY past the busy timeout: a failed call
            if "locked" not in str(exc) and "busy" not in str(exc).lower():
                raise
            busy += 1
            continue
        row = conn.execute("SELECT id FROM q WHERE done = 0 LIMIT 1 OFFSET ?", (index,))
        found = next(iter(row), None)
        if found is not None:
            conn.execute("UPDATE q SET done = 1 WHERE id = ?", (found[0],))
        conn.execute("COMMIT")
        if lock >= 0:
            fcntl.flock(lock, fcntl.LOCK_UN)
        latencies.append(time.perf_counter() - began)
    out.put((latencies, busy))


def contention(kind: str, processes: int, seconds: float) -> dict[str, float]:
    """Transactions a second of `processes` processes on one file, and latency p50/p99."""
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/options.db"
        _prepare(path)
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        procs = [
            ctx.Process(target=_worker, args=(kind, path, i, seconds, out))
            for i in range(processes)
        ]
        for proc in procs:
            proc.start()
        latencies: list[float] = []
        failed = 0
        for _ in procs:
            got, busy = out.get(timeout=seconds + 60)
            latencies.extend(got)
            failed += busy
        for proc in procs:
            proc.join()
        latencies.sort()
        return {
            "tps": len(latencies) / seconds,
            "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
            "max_ms": 1000 * latencies[-1],
            "busy_errors": failed,
        }


def statements(kind: str, count: int) -> float:
    """µs of CPU a delivery-like mix costs: insert a row, read it back, update it, read
    the due index, in one transaction per 64 such mixes (synchronous=OFF)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/cpu.db"
        conn = _connect(kind, path)
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute(
            "CREATE TABLE d (id TEXT PRIMARY KEY, status TEXT, step INTEGER, wake REAL, "
            "token INTEGER, body TEXT)"
        )
        conn.execute("CREATE INDEX d_wake ON d (wake) WHERE status = 'pending'")
        body = "x" * 400
        began = time.process_time()
        for first in range(0, count, 64):
            conn.execute("BEGIN IMMEDIATE")
            for i in range(first, min(count, first + 64)):
                key = f"id-{i:08d}"
                conn.execute(
                    "INSERT INTO d VALUES (?, 'pending', 0, ?, 0, ?)", (key, float(i), body)
                )
                list(conn.execute("SELECT * FROM d WHERE id = ?", (key,)))
                conn.execute(
                    "UPDATE d SET token = token + 1, step = 1 WHERE id = ? AND token = 0", (key,)
                )
                list(
                    conn.execute(
                        "SELECT id FROM d WHERE status = 'pending' AND wake <= ? "
                        "ORDER BY wake LIMIT 1",
                        (float(i),),
                    )
                )
                conn.execute("UPDATE d SET status = 'done' WHERE id = ?", (key,))
            conn.execute("COMMIT")
        cpu = time.process_time() - began
        conn.close()
        return 1e6 * cpu / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--processes", default="1,6")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    try:
        import apsw

        kinds = ["flock", "apsw", "busy"]
        bundled = apsw.sqlite_lib_version()
        print(f"sqlite3 links SQLite {sqlite3.sqlite_version}; apsw bundles {bundled}")
    except ImportError:
        kinds = ["flock", "busy"]
        print(f"sqlite3 links SQLite {sqlite3.sqlite_version}; apsw not installed")
    results: dict[str, Any] = {}
    for processes in (int(p) for p in args.processes.split(",")):
        for run in range(args.runs):
            for kind in kinds:  # side by side, run after run
                got = contention(kind, processes, args.seconds)
                results.setdefault(f"{kind} x{processes}", []).append(got)
                print(f"run {run + 1} {kind:>5} x{processes}: {json.dumps(got)}", file=sys.stderr)
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(
            f"{name:>10}: {med['tps']:7.0f} tx/s  p50 {med['p50_ms']:6.2f} ms  "
            f"p99 {med['p99_ms']:7.2f} ms  max {med['max_ms']:7.1f} ms  "
            f"SQLITE_BUSY {sum(r['busy_errors'] for r in runs)}  (median of {len(runs)})"
        )
    for kind in [k for k in kinds if k != "busy"]:
        cpu = statistics.median(
            statements("apsw" if kind == "apsw" else "sqlite3", 20_000) for _ in range(args.runs)
        )
        print(
            f"{'sqlite3' if kind == 'flock' else 'apsw':>10}: {cpu:6.1f} µs CPU per statement mix"
        )


if __name__ == "__main__":
    main()
