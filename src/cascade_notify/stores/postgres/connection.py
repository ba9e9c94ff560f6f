"""The PostgreSQL store's connections: the pool, and what a psycopg error means (an
outage to retry, or the server refusing what one call wrote)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import psycopg
from psycopg_pool import AsyncConnectionPool
from psycopg_pool.pool_async import AddConnection, MaintenanceTask

from cascade_notify.errors import StoreError
from cascade_notify.stores.postgres.rows import Conn

#: The longest pause between two reconnect attempts of the pool (seconds).
RECONNECT_PAUSE = 0.5


class _Pool(AsyncConnectionPool[Conn]):
    """psycopg_pool's pool, whose reconnect backoff doubles without bound (1, 2, 4, 8 s...):
    after an outage of refused connections (each attempt fails at once, so they pile up)
    it would try again up to 8 s or more after the server is back. A failed connect is
    cheap: here reconnect attempts are at most `RECONNECT_PAUSE` apart."""

    async def schedule_task(self, task: MaintenanceTask, delay: float) -> None:
        if isinstance(task, AddConnection):
            delay = min(delay, RECONNECT_PAUSE)
        await super().schedule_task(task, delay)


class Refused(StoreError):
    """The server (or the driver) refused what one call wrote (a value it cannot hold, a
    limit): not an outage. A group of calls that fails so is retried one call at a time,
    so that only the call at fault fails."""


# SQLSTATE classes of a lost or refused connection, an overloaded or stopping server:
# the others are the server refusing the statement itself (bad data, a limit)
_CONNECTION_CLASSES = frozenset({"08", "53", "57", "58", "XX"})


def _connection_lost(exc: psycopg.Error) -> bool:
    return exc.sqlstate is None or exc.sqlstate[:2] in _CONNECTION_CLASSES


def _said(exc: psycopg.Error) -> str:
    # the server's primary message and code only: its DETAIL and CONTEXT quote the data
    # (a recipient's phone number, an idempotency key), which must not reach error texts
    primary = exc.diag.message_primary or type(exc).__name__
    return f"{primary} (SQLSTATE {exc.sqlstate})"


@contextlib.asynccontextmanager
async def _autocommit() -> AsyncIterator[None]:
    yield


def _refused(exc: BaseException) -> bool:
    return isinstance(exc, Refused)


def _flag(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not true or false")
