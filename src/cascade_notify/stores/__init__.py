"""Stores: where cascades live. `open_store(url)` picks one by URL scheme.

Besides the `Store` protocol the engine uses, stores offer capabilities, each
a small protocol of its own: `Purgeable` (every store), `Migratable` (the
SQL stores, whose schema has versions), `Watchable` (PostgreSQL and SQLite,
which tell workers at once when another process makes a delivery due), `Settling`
(stores that work in a thread: the fake clock waits for them), `Batching` (every
store: many new deliveries in one transaction), `Rescheduling` (every store: a
scheduled delivery's start moved), `AddressBook` (every store: what providers
learned about addresses, gone or linked to a recipient, for later cascades to skip or
fill them), `Learning` (every store: each recipient's channel history, for policies
with `order: learned`) and `Observable` (every store: the read-only `deliveries` and `stats`
views, docs/observability.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from cascade_notify.errors import StoreError
from cascade_notify.models import Delivery
from cascade_notify.stores.base import (
    AddressBook,
    Claim,
    Learning,
    ReceiptResult,
    SignalOutcome,
    Store,
    Transition,
)
from cascade_notify.stores.memory import MemoryStore

if TYPE_CHECKING:
    from cascade_notify.observe.types import (
        DeliveryPage,
        DeliveryQuery,
        Dimension,
        FailureRow,
        Stats,
    )

SCHEMES = ("memory://", "sqlite:///", "postgresql://", "postgres://")


@runtime_checkable
class Purgeable(Protocol):
    """A store that can forget finished deliveries (`cascade-notify store purge`)."""

    async def purge(self, older_than: float, now: float) -> int:
        """Delete deliveries final for at least `older_than` seconds at `now`, with their
        attempts and receipts; return how many deliveries were deleted."""
        ...


@runtime_checkable
class Batching(Protocol):
    """A store that writes many new deliveries in one transaction (`send_many`)."""

    async def create_many(
        self, deliveries: Sequence[Delivery]
    ) -> list[tuple[Delivery, bool] | Exception]:
        """`Store.create` for each delivery, in order, in one transaction: for each, what
        `create` returns, or the error that refused that one alone (it wrote nothing of
        it; the others are written). An error raised means nothing was written."""
        ...


@runtime_checkable
class Rescheduling(Protocol):
    """A store that moves the start of a scheduled delivery (`Notifier.reschedule`)."""

    async def reschedule(self, delivery_id: str, start: float) -> Delivery | None:
        """If the delivery is still `scheduled`, make it start at `start` and move its
        expiry by as much; leave any other as it is. Return it as it stands, or None."""
        ...


@runtime_checkable
class Migratable(Protocol):
    """A store with a versioned schema (`cascade-notify store migrate`)."""

    async def migrate(self) -> tuple[int, int]:
        """Bring the schema up to this code's version, opening the store if needed;
        return (version before, version after)."""
        ...


@runtime_checkable
class Settling(Protocol):
    """A store that does some of its work off the event loop (in a thread), and says
    whether it has any in hand, so `FakeClock.advance()` waits for it to settle."""

    def idle(self) -> bool:
        """True when no work of the store's is in flight."""
        ...


@runtime_checkable
class Watchable(Protocol):
    """A store shared by processes that says when another of them made a delivery due
    (a send, a receipt), so a worker need not poll for it."""

    async def watch(self, wake: Callable[[], None]) -> None:
        """Call `wake` (in this event loop) whenever a delivery became due elsewhere, and
        once whenever watching starts again after an interruption, until `close`."""
        ...


@runtime_checkable
class Observable(Protocol):
    """A store that answers the read-only views: `cascade-notify deliveries` and `stats`
    (every bundled store; the SQL ones aggregate in the database)."""

    async def list_deliveries(
        self, query: DeliveryQuery, *, cursor: str | None = None, limit: int = 50
    ) -> DeliveryPage:
        """Deliveries matching `query`, newest first: `limit` of them after `cursor`
        (the `cursor` of the page before; QueryError if it is not one)."""
        ...

    async def stats(self, since: float, until: float, by: Sequence[Dimension]) -> Stats:
        """Statistics of the deliveries created in `[since, until)`, grouped `by`."""
        ...

    async def failures(self, since: float, until: float) -> list[FailureRow]:
        """The failed attempts of the deliveries created in `[since, until)`, counted by
        channel, provider, status and code, most frequent first."""
        ...


@runtime_checkable
class Counting(Protocol):
    """A store that says how many deliveries are not final (every bundled store), for
    the `cascade_notify_deliveries_unfinished` gauge."""

    async def unfinished(self) -> dict[str, int]:
        """How many deliveries are not final, by status (`scheduled`, `pending`)."""
        ...


def open_store(url: str) -> Store:
    """The store a `store:` URL names (not yet opened)."""
    if url in ("memory://", "memory"):
        return MemoryStore()
    if url.startswith("sqlite:"):
        from cascade_notify.stores.sqlite import SQLiteStore

        return SQLiteStore.from_url(url)
    if url.startswith(("postgresql:", "postgres:")):
        try:
            from cascade_notify.stores.postgres import PostgresStore
        except ImportError as exc:
            raise StoreError(
                f"store {url.split(':', 1)[0]}:// needs psycopg: "
                f"pip install 'cascade-notify[postgres]' ({exc})"
            ) from None
        return PostgresStore.from_url(url)
    raise StoreError(f"unsupported store URL {_mask(url)!r}; supported: {', '.join(SCHEMES)}")


def _mask(url: str) -> str:
    """`url` without a password, for error messages."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"


__all__ = [
    "AddressBook",
    "Batching",
    "Claim",
    "Counting",
    "Learning",
    "MemoryStore",
    "Migratable",
    "Observable",
    "Purgeable",
    "ReceiptResult",
    "Rescheduling",
    "Settling",
    "SignalOutcome",
    "Store",
    "Transition",
    "Watchable",
    "open_store",
]
