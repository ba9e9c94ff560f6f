"""Outcome webhooks survive a worker SIGKILLed between a change and its POST (failpoints),
and a receiver answering 503 for a while: every event arrives, in order per delivery,
signed (checked by the `standardwebhooks` package), none lost; on SQLite and PostgreSQL.
(The memory store dies with its process: `test_outbox.py` covers a sender's death there.)"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from pathlib import Path

import pytest

from cascade_notify.stores._failpoints import ENV, OUTBOX_FAILPOINTS

from .outbox_receiver import check_arrivals, receiving
from .test_outbox import SECRET

APP = Path(__file__).with_name("outbox_app.py")
COUNT = 4
#: where the worker dies: the finishing change written, its webhook not posted; a receipt
#: recorded (its webhook in the outbox); right before a POST; after a POST's 2xx, before
#: it is marked sent (that event is posted again: the receiver dedupes by webhook-id)
CASES = [
    ("finish.after", 2),
    ("receipt.after", 2),
    ("outbox.before", 3),
    ("outbox.after", 3),
]


def test_every_outbox_failpoint_has_a_case() -> None:
    """An outbox failpoint added without a case here fails this test."""
    assert {point for point, _ in CASES} >= set(OUTBOX_FAILPOINTS)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/outbox.db"
    dsn = request.getfixturevalue("pg_dsn")
    return f"{dsn}?schema={request.getfixturevalue('pg_schema')}"


async def run_app(store: str, url: str, failpoint: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if failpoint is not None:
        env[ENV] = failpoint
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(APP), store, url, SECRET, str(COUNT), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode is not None
    if process.returncode not in (0, -9):
        raise AssertionError(err.decode()[-3000:])
    return process.returncode


def stored_events(store: str) -> tuple[set[str], set[str]]:
    """Every event id in the outbox, and those not marked sent."""
    query = "SELECT id, sent_ts IS NULL FROM outbox"
    if store.startswith("sqlite"):
        with sqlite3.connect(store.removeprefix("sqlite:///")) as conn:
            rows = conn.execute(query).fetchall()
    else:
        import psycopg

        dsn, _, schema = store.partition("?schema=")
        with psycopg.connect(dsn, options=f"-c search_path={schema}") as conn:
            rows = conn.execute(query).fetchall()
    return {r[0] for r in rows}, {r[0] for r in rows if r[1]}


@pytest.mark.slow
@pytest.mark.parametrize(("point", "nth"), CASES, ids=[f"{p}@{n}" for p, n in CASES])
async def test_killed_worker_loses_no_event(store_url: str, point: str, nth: int) -> None:
    """Killed at the failpoint, then run again: each delivery's events (skipped, attempt,
    its receipt, finished; or, where the crash lost the fake provider's receipt, the
    attempt timing out and the cascade exhausted) reach the receiver in order and signed,
    through its 503s, and they are every event the store holds."""
    async with receiving(fail_first=3) as receiver:
        assert await run_app(store_url, receiver.url, f"{point}@{nth}") == -9
        assert await run_app(store_url, receiver.url, None) == 0
    told = check_arrivals(receiver, SECRET)
    assert len(told) == COUNT
    for events in told.values():
        told_as = [(e["type"].removeprefix("delivery."), e["data"].get("status")) for e in events]
        assert told_as[0] == ("skipped", None)
        assert told_as[1] in (("attempt", "accepted"), ("attempt", "unknown"))  # a crash mid-send
        assert told_as[2:] in (
            [("receipt", "delivered"), ("finished", "delivered")],
            [("attempt", "timed_out"), ("finished", "exhausted")],
        )
    stored, unsent = stored_events(store_url)
    assert not unsent
    accepted = {a.headers["webhook-id"] for a in receiver.accepted()}
    assert accepted == stored
    assert any(a.status == 503 for a in receiver.arrivals)
