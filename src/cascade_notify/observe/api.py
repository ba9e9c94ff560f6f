"""The views as functions of a store: what `Notifier.stats`/`deliveries` and the CLI call."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from cascade_notify.observe.types import (
    DeliveryPage,
    DeliveryQuery,
    Dimension,
    FailureRow,
    QueryError,
    Stats,
    check_by,
    check_window,
)

if TYPE_CHECKING:
    from cascade_notify.stores.base import Store

#: A moment: POSIX seconds, an aware datetime, or a timedelta (that long before now).
Moment = float | datetime | timedelta


def moment(value: Moment, now: float, argument: str) -> float:
    """POSIX seconds of `value`, read against `now`."""
    if isinstance(value, timedelta):
        return now - value.total_seconds()
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise QueryError(argument, "a datetime needs a time zone (e.g. tzinfo=UTC)")
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise QueryError(argument, f"must be POSIX seconds, a datetime or a timedelta: {value!r}")
    return float(value)


def _observable(store: Store) -> object:
    from cascade_notify.stores import Observable

    if not isinstance(store, Observable):
        raise QueryError("store", f"{type(store).__name__} does not answer queries")
    return store


async def stats(
    store: Store,
    now: float,
    *,
    since: Moment,
    until: Moment | None = None,
    by: Dimension | Sequence[Dimension] = "channel",
) -> Stats:
    from cascade_notify.stores import Observable

    found = _observable(store)
    assert isinstance(found, Observable)
    start = moment(since, now, "since")
    end = now if until is None else moment(until, now, "until")
    return await found.stats(start, end, check_by(by))


async def deliveries(
    store: Store,
    query: DeliveryQuery | None = None,
    *,
    cursor: str | None = None,
    limit: int = 50,
) -> DeliveryPage:
    from cascade_notify.stores import Observable

    found = _observable(store)
    assert isinstance(found, Observable)
    return await found.list_deliveries(query or DeliveryQuery(), cursor=cursor, limit=limit)


async def failures(store: Store, *, since: float, until: float) -> list[FailureRow]:
    """The failed attempts of the deliveries created in `[since, until)`, by channel,
    provider, status and code, most frequent first."""
    from cascade_notify.stores import Observable

    found = _observable(store)
    assert isinstance(found, Observable)
    check_window(since, until)
    return await found.failures(since, until)
