"""`SharedState` (what the workers' guards share) on the stores that offer it: memory,
SQLite (every process on one file) and PostgreSQL. Breakers shared through them:
tests/test_resilience_shared.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cascade_notify.resilience import SharedState
from cascade_notify.stores import MemoryStore
from cascade_notify.stores.sqlite import SQLiteStore

from .conftest import NOW


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def shared(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SharedState]:
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "sqlite":
        sqlite = SQLiteStore(str(tmp_path / "shared.db"))
        await sqlite.open()
        yield sqlite
        await sqlite.close()
        return
    from cascade_notify.stores.postgres import PostgresStore

    store = PostgresStore(
        request.getfixturevalue("pg_dsn"), schema=request.getfixturevalue("pg_schema")
    )
    await store.open()
    yield store
    await store.close()


async def test_bump_adds_above_the_floor(shared: SharedState) -> None:
    """A number starts at floor + add, grows by add, and never counts from below floor."""
    assert await shared.shared_bump("rate:wa", 1.0, floor=10.0, now=NOW, ttl=60) == 11.0
    assert await shared.shared_bump("rate:wa", 1.0, floor=10.0, now=NOW, ttl=60) == 12.0
    assert await shared.shared_bump("rate:wa", 1.0, floor=20.0, now=NOW, ttl=60) == 21.0


async def test_an_expired_number_counts_as_absent(shared: SharedState) -> None:
    """Past its ttl a number starts again from the floor."""
    await shared.shared_bump("brake:x", 5.0, floor=0.0, now=NOW, ttl=60)
    assert await shared.shared_bump("brake:x", 1.0, floor=0.0, now=NOW + 61, ttl=60) == 1.0


async def test_put_is_versioned(shared: SharedState) -> None:
    """A text is written only over the version the writer read; 0 means absent."""
    assert await shared.shared_put("breaker:wa", "open", version=0, now=NOW, ttl=60) == 1
    assert await shared.shared_put("breaker:wa", "closed", version=0, now=NOW, ttl=60) is None
    assert await shared.shared_put("breaker:wa", "half", version=1, now=NOW, ttl=60) == 2
    assert await shared.shared_put("breaker:wa", "late", version=1, now=NOW, ttl=60) is None


async def test_get_reads_live_texts_by_prefix(shared: SharedState) -> None:
    """get returns the live texts under a prefix with their versions, not expired ones."""
    await shared.shared_put("breaker:wa", "open", version=0, now=NOW, ttl=60)
    await shared.shared_put("breaker:tg", "closed", version=0, now=NOW, ttl=10)
    await shared.shared_put("other:x", "y", version=0, now=NOW, ttl=60)
    assert await shared.shared_get("breaker:", NOW + 1) == {
        "breaker:wa": (1, "open"),
        "breaker:tg": (1, "closed"),
    }
    assert await shared.shared_get("breaker:", NOW + 11) == {"breaker:wa": (1, "open")}


async def test_an_expired_text_reads_as_absent_and_anyone_may_write_it(
    shared: SharedState,
) -> None:
    """A breaker state nobody renewed within its ttl is gone: it is not read, and the next
    write wins whatever version its writer held (a new process's 0, or an old worker's
    last), so `breaker open` a month after the last change is not silently lost; the
    version goes on counting, and once live again the usual check holds."""
    assert await shared.shared_put("breaker:wa", "open", version=0, now=NOW, ttl=10) == 1
    assert await shared.shared_put("breaker:tg", "open", version=0, now=NOW, ttl=10) == 1
    assert await shared.shared_get("breaker:", NOW + 11) == {}
    assert await shared.shared_put("breaker:wa", "closed", version=0, now=NOW + 11, ttl=10) == 2
    assert await shared.shared_put("breaker:tg", "closed", version=1, now=NOW + 11, ttl=10) == 2
    assert await shared.shared_put("breaker:wa", "late", version=0, now=NOW + 12, ttl=10) is None
    assert await shared.shared_get("breaker:", NOW + 12) == {
        "breaker:wa": (2, "closed"),
        "breaker:tg": (2, "closed"),
    }
