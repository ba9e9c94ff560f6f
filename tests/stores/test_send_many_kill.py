"""SIGKILL during `send_many` of 10,000 on each durable store: every item is stored whole
or not at all (whole batches), everything the caller was told is stored is there, and
running the same batch again with the same keys stores each item exactly once."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

APP = Path(__file__).with_name("bulk_kill_app.py")
COUNT = 10_000
BATCH = 500


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str, str | None]:
    """(store URL, kind, PostgreSQL DSN or None)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/bulk.db", "sqlite", None
    dsn = request.getfixturevalue("pg_dsn")
    schema = request.getfixturevalue("pg_schema")
    return f"{dsn}?schema={schema}", "postgres", dsn


def rows(url: str, kind: str, dsn: str | None) -> list[tuple[str, str, str]]:
    """(idempotency key, recipient JSON, message JSON) of every stored delivery."""
    query = "SELECT idempotency_key, recipient::text, message::text FROM deliveries"
    if kind == "sqlite":
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            return list(conn.execute(query.replace("::text", "")))
    import psycopg

    assert dsn is not None
    schema = url.rsplit("schema=", 1)[1]
    with psycopg.connect(dsn) as conn:
        return [
            tuple(r) for r in conn.execute(query.replace("deliveries", f'"{schema}".deliveries'))
        ]  # type: ignore[misc]


@pytest.mark.slow
def test_a_send_many_killed_midway_leaves_whole_items_and_reruns_exactly_once(
    target: tuple[str, str, str | None],
) -> None:
    url, kind, dsn = target
    told = 0
    with subprocess.Popen(
        [sys.executable, str(APP), url, str(COUNT), str(BATCH)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as child:
        assert child.stdout is not None
        for line in child.stdout:  # real waiting: until a few batches are committed
            if line.startswith("stored "):
                told = int(line.split()[1])
                if told >= 3 * BATCH:
                    break
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert told >= 3 * BATCH, "the child ended before three batches were stored"

    found = rows(url, kind, dsn)
    keys = {key for key, _, _ in found}
    assert len(keys) == len(found)  # one delivery per key
    assert {f"k-{i}" for i in range(told)} <= keys  # what the caller was told is there
    assert len(found) % BATCH == 0 and len(found) < COUNT  # whole batches, no more
    for key, recipient, message in found:  # every item whole
        i = key.removeprefix("k-")
        assert f'"c{i}@example.com"' in recipient and f"parcel {i} is on" in message

    again = subprocess.run(
        [sys.executable, str(APP), url, str(COUNT), str(BATCH)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    created, stored, failed = (int(n) for n in again.stdout.split("done ")[1].split())
    assert (created, stored, failed) == (COUNT - len(found), COUNT, 0)
    final = rows(url, kind, dsn)
    assert len(final) == COUNT == len({key for key, _, _ in final})
