"""What the SQL stores share besides their encoding: the pure halves of their writes,
schema-version messages, and URL options."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl

from cascade_notify.errors import StoreError
from cascade_notify.models import OPEN_ATTEMPT, Attempt, AttemptStatus, Delivery, DeliveryStatus
from cascade_notify.stores.base import Transition

#: Finished deliveries are deleted this many at a time, so a large purge never holds
#: the write lock (SQLite) or a huge transaction (PostgreSQL) for long.
PURGE_CHUNK = 1000


def cancel_transition(delivery: Delivery, now: float) -> Transition:
    """The write that cancels a pending delivery: open attempts abandoned, status final."""
    closed: list[Attempt] = []
    for attempt in delivery.attempts:
        if attempt.status in OPEN_ATTEMPT:
            attempt = attempt.copy()
            attempt.status = AttemptStatus.ABANDONED
            attempt.finished_ts = now
            closed.append(attempt)
    return Transition(attempts=closed, status=DeliveryStatus.CANCELLED, finished_ts=now)


def written(delivery: Delivery, transition: Transition) -> list[Attempt]:
    """The attempts of `delivery` (after `apply_transition`) that `transition` touched."""
    ids = {attempt.id for attempt in transition.attempts}
    return [attempt for attempt in delivery.attempts if attempt.id in ids]


def check_version(found: int, expected: int, where: str) -> None:
    """Raise a StoreError saying what to do if the schema at `where` is not `expected`."""
    if found < expected:
        raise StoreError(
            f"the store at {where} has schema version {found}, older than this "
            f"cascade_notify's {expected}: run `cascade-notify store migrate --policy FILE` "
            "(stop the workers first)"
        )
    if found > expected:
        raise StoreError(
            f"the store at {where} has schema version {found}, newer than this "
            f"cascade_notify's {expected}: upgrade cascade_notify (a store is never migrated "
            "down)"
        )


def url_options(query: str, allowed: Mapping[str, str], url: str) -> dict[str, str]:
    """The `?key=value` options of a store URL; an unknown one is an error naming the known."""
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        known = ", ".join(f"{k} ({v})" for k, v in allowed.items())
        raise StoreError(f"store URL {url!r}: unknown option {unknown[0]!r}; known: {known}")
    return options
