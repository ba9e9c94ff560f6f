"""The SQLite store, the embedded default: `store: sqlite:///cascade.db`.

One connection does all the reading and writing (`_sqlite_writer`): calls run
in the event loop's thread inside `BEGIN IMMEDIATE` transactions, committed
in groups with the fsync in a thread of its own; a call returns only after
its group committed. The
database is in WAL mode with `synchronous=FULL` unless the URL says
otherwise (`?synchronous=NORMAL` trades the last moments before a power cut
for speed; a process crash loses nothing either way).

One process only: a second connection writing the same WAL database can
corrupt it with the SQLite versions Python 3.11 links, so the store holds an
exclusive lock on `<file>-lock` while it is open, and a second opener gets a
StoreError (run several workers on PostgreSQL instead).

Nothing about a delivery is cached in Python: every call reads the rows it
needs, so memory does not grow with the number of deliveries pending.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from cascade_notify.errors import LeaseLost, StoreError
from cascade_notify.models import (
    Attempt,
    AttemptStatus,
    Delivery,
    DeliveryStatus,
    Receipt,
    Signal,
    status_after,
)
from cascade_notify.stores import _addresses
from cascade_notify.stores import _failpoints as failpoints
from cascade_notify.stores._codec import (
    ATTEMPT_COLUMNS,
    DELIVERY_COLUMNS,
    RECEIPT_COLUMNS,
    Unchanging,
    attempt_from_row,
    attempt_values,
    decode_skipped,
    delivery_from_row,
    delivery_values,
    encode_skipped,
    receipt_from_row,
    receipt_values,
)
from cascade_notify.stores._common import (
    PURGE_CHUNK,
    cancel_transition,
    url_options,
    written,
)
from cascade_notify.stores.base import Claim, ReceiptResult, Transition, apply_transition
from cascade_notify.stores.memory import ORPHAN_LIMIT, ORPHAN_TTL
from cascade_notify.stores.sqlite import addresses as book
from cascade_notify.stores.sqlite import schema
from cascade_notify.stores.sqlite.writer import Writer

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock, the rule still holds
    fcntl = None  # type: ignore[assignment]

_T = TypeVar("_T")


def _same(value: None) -> None:
    return value


# The sqlite3 module looks for an adapter for every parameter that is not exactly an int,
# float, str or bytearray (so for each None and bool), and each failed lookup formats an
# AttributeError: 0.45 us a NULL, about fifteen NULLs a delivery. An identity adapter for
# None is found at once and changes nothing else; bools are passed as ints.
if (type(None), sqlite3.PrepareProtocol) not in sqlite3.adapters:
    sqlite3.register_adapter(type(None), _same)
_OPTIONS = {
    "synchronous": "FULL (default), NORMAL or OFF",
    "commit_window_ms": "how long a group waits for more writes; default 0",
}
_SYNCHRONOUS = ("FULL", "NORMAL", "OFF", "EXTRA")

_D = ", ".join(DELIVERY_COLUMNS)
_A = ", ".join(ATTEMPT_COLUMNS)
_R = ", ".join(RECEIPT_COLUMNS)
_SELECT_DELIVERY = f"SELECT {_D} FROM deliveries WHERE id = ?"  # noqa: S608 - constant columns
# `{marks}`: as many `?` as delivery ids
_SELECT_ATTEMPTS = f"SELECT {_A} FROM attempts WHERE delivery_id IN ({{marks}}) ORDER BY seq"  # noqa: S608
_SELECT_RECEIPTS = (
    f"SELECT r.attempt_id, {', '.join('r.' + c for c in RECEIPT_COLUMNS)} "  # noqa: S608
    "FROM attempts a JOIN receipts r ON r.attempt_id = a.id WHERE a.delivery_id IN ({marks}) "
    "ORDER BY r.seq"
)
_SELECT_STORED = (
    f"SELECT a.provider_message_id, {', '.join('r.' + c for c in RECEIPT_COLUMNS)} "  # noqa: S608
    "FROM attempts a LEFT JOIN receipts r ON r.attempt_id = a.id WHERE a.id = ? ORDER BY r.seq"
)
_CLAIM = (
    "UPDATE deliveries SET token = token + 1, lease_until = ?, poked = 0 "  # noqa: S608
    f"WHERE id IN ({{marks}}) RETURNING token, {_D}"
)
_INSERT_DELIVERY = (
    f"INSERT INTO deliveries ({_D}, poked) VALUES ({', '.join('?' * len(DELIVERY_COLUMNS))}, 1)"  # noqa: S608
)
# a message id learned from a receipt (by attempt id) outlives a writer's copy without one
_SET = {
    "provider_message_id": "provider_message_id = "
    "coalesce(excluded.provider_message_id, attempts.provider_message_id)"
}
_UPSERT_ATTEMPT = (
    f"INSERT INTO attempts ({_A}) VALUES ({', '.join('?' * len(ATTEMPT_COLUMNS))}) "  # noqa: S608
    "ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(_SET.get(c, f"{c} = excluded.{c}") for c in ATTEMPT_COLUMNS[1:])
)
_INSERT_NEW_ATTEMPT = (
    f"INSERT INTO attempts ({_A}) VALUES ({', '.join('?' * len(ATTEMPT_COLUMNS))}) "  # noqa: S608
    "ON CONFLICT (id) DO NOTHING"
)
_INSERT_RECEIPT = (
    f"INSERT INTO receipts (attempt_id, {_R}) VALUES (?, {', '.join('?' * len(RECEIPT_COLUMNS))}) "  # noqa: S608
    "ON CONFLICT (attempt_id, receipt_id) DO NOTHING"
)
_INSERT_ORPHAN = (
    f"INSERT INTO orphan_receipts ({_R}, kept_ts) "  # noqa: S608
    f"VALUES ({', '.join('?' * len(RECEIPT_COLUMNS))}, ?) "
    "ON CONFLICT (provider, provider_message_id, receipt_id) DO NOTHING"
)
# The three ways a delivery is due; each query is served by its own partial index.
_DUE = (
    "SELECT id FROM deliveries WHERE status = 'pending' AND poked = 1 AND lease_until <= ? LIMIT ?",
    "SELECT id FROM deliveries WHERE status = 'pending' AND lease_until > 0 "
    "AND lease_until <= ? ORDER BY lease_until LIMIT ?",
    "SELECT id FROM deliveries WHERE status = 'pending' AND wake_ts <= ?1 AND lease_until <= ?1 "
    "ORDER BY wake_ts LIMIT ?2",
)
_COMMIT_DELIVERY = (
    "UPDATE deliveries SET step = coalesce(?, step), status = coalesce(?, status), "
    "channel = CASE WHEN ? THEN ? ELSE channel END, "
    "finished_ts = CASE WHEN ? THEN ? ELSE finished_ts END, wake_ts = ?, "
    "skipped = coalesce(?, skipped), lease_until = CASE WHEN ? THEN 0 ELSE lease_until END "
    "WHERE id = ? AND token = ?"
)
_UPDATE_DELIVERY = (
    "UPDATE deliveries SET step = ?, status = ?, channel = ?, finished_ts = ?, wake_ts = ?, "
    "skipped = ?, lease_until = CASE WHEN ? THEN 0 ELSE lease_until END, "
    "poked = poked OR ?, token = token + ? WHERE id = ?"
)


class SQLiteStore:
    """`store: sqlite:///path.db` (or `sqlite:///:memory:` for tests)."""

    #: Whether other processes may change what this store holds (a file other processes may open).
    shared: ClassVar[bool] = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        commit_window: float = 0.0,
    ) -> None:
        self.path = str(path)
        self.synchronous = synchronous.upper()
        if self.synchronous not in _SYNCHRONOUS:
            raise StoreError(f"synchronous={synchronous!r}: use one of {', '.join(_SYNCHRONOUS)}")
        self.commit_window = commit_window
        self._writer: Writer | None = None
        self._lock_fd: int | None = None
        self._unchanging = Unchanging()

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        """`sqlite:///relative.db`, `sqlite:////absolute.db`, `sqlite:///:memory:`,
        with options `?synchronous=NORMAL&commit_window_ms=2`."""
        parts = urlsplit(url)
        if parts.scheme != "sqlite" or parts.netloc or len(parts.path) < 2:
            raise StoreError(f"store URL {url!r}: write sqlite:///file.db (three slashes)")
        options = url_options(parts.query, _OPTIONS, url)
        try:
            window = float(options.get("commit_window_ms", "0")) / 1000
        except ValueError:
            raise StoreError(f"store URL {url!r}: commit_window_ms must be a number") from None
        return cls(
            parts.path[1:], synchronous=options.get("synchronous", "FULL"), commit_window=window
        )

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.path}>"

    def idle(self) -> bool:
        """No call is in flight (the notifier's idle check, which a fake clock reads)."""
        return self._writer is None or self._writer.in_flight == 0

    # lifecycle

    async def open(self) -> None:
        """Open the database; create the schema if it is empty, refuse an old or new one."""
        await self._start()
        try:
            await self._call(partial(schema.check_or_create, where=self.path))
        except BaseException:
            await self.close()
            raise

    async def migrate(self) -> tuple[int, int]:
        """Bring the schema to this code's version; return (version before, version now).
        Opens the store if it is not open; it stays open."""
        await self._start()
        return await self._call(partial(schema.migrate, where=self.path))

    async def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await writer.stop()
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the lock
            self._lock_fd = None

    async def _start(self) -> None:
        if self._writer is not None:
            return
        if self.path != ":memory:":
            self._lock()
        writer = Writer(self._connect, window=self.commit_window, name=self.path)
        try:
            writer.start()
        except BaseException:
            self._unlock()
            raise
        self._writer = writer

    def _lock(self) -> None:
        if fcntl is None:
            return
        lock_path = f"{self.path}-lock"
        try:
            Path(lock_path).parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot open the SQLite store {self.path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StoreError(
                f"the SQLite store {self.path} is open in another process (or another store "
                "object); SQLite serves one process: stop it first, or use PostgreSQL for "
                "several workers"
            ) from None
        self._lock_fd = fd

    def _connect(self) -> sqlite3.Connection:
        # used by the event loop's thread, and by the syncer thread for COMMIT (never both
        # at once: the writer queues calls while a commit is in flight)
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, cached_statements=1024
        )
        conn.execute("PRAGMA busy_timeout = 5000")
        if self.path != ":memory:":
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot use WAL mode (got {mode})")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    # the Store protocol

    async def create(self, delivery: Delivery) -> tuple[Delivery, bool]:
        failpoints.hit("send.before")
        result = await self._call(
            partial(_create, delivery=delivery, unchanging=self._unchanging), light=True
        )
        failpoints.hit("send.after")
        return result

    async def get(self, delivery_id: str) -> Delivery | None:
        return await self._call(
            partial(_load, delivery_id=delivery_id, unchanging=self._unchanging), light=True
        )

    async def claim(self, now: float, *, limit: int, lease: float) -> list[Claim]:
        claims = await self._call(
            partial(_claim, now=now, limit=limit, lease=lease, unchanging=self._unchanging),
            light=True,
        )
        if claims:
            failpoints.hit("claim.after")
        return claims

    async def commit(self, claim: Claim, transition: Transition) -> None:
        path = failpoints.path_of(transition)
        failpoints.hit(f"{path}.before")
        await self._call(partial(_commit, claim=claim, transition=transition), light=True)
        failpoints.hit(f"{path}.after")

    async def record_receipts(self, receipts: Sequence[Receipt], now: float) -> list[ReceiptResult]:
        failpoints.hit("receipt.before")
        results = await self._call(partial(_record, receipts=list(receipts), now=now), light=True)
        failpoints.hit("receipt.after")
        return results

    async def cancel(self, delivery_id: str, now: float) -> Delivery | None:
        return await self._call(partial(_cancel, delivery_id=delivery_id, now=now), light=True)

    async def next_wake(self) -> float | None:
        return await self._call(_next_wake, light=True)

    async def purge(self, older_than: float, now: float) -> int:
        """Delete deliveries final for at least `older_than` seconds, with everything of
        theirs, and orphan receipts past their time; return how many deliveries went."""
        total = 0
        while True:  # in chunks, so other writers get the lock in between
            count = await self._call(partial(_purge, cutoff=now - older_than, now=now))
            total += count
            if count < PURGE_CHUNK:
                return total

    # AddressBook (the work in `sqlite.addresses`)

    async def record_signals(self, signals: Sequence[Signal]) -> None:
        checked = _addresses.checked(signals)
        if checked:
            await self._call(partial(book.record, signals=checked), light=True)

    async def unusable(self, addresses: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Signal]:
        wanted = _addresses.wanted(addresses)
        if not wanted:
            return {}
        return await self._call(partial(book.unusable, addresses=wanted), light=True)

    async def linked(self, recipient_id: str) -> dict[str, str]:
        if not _addresses.storable(recipient_id):
            return {}
        return await self._call(partial(book.linked, recipient_id=recipient_id), light=True)

    async def forget(self, recipient_id: str) -> int:
        if not _addresses.storable(recipient_id):
            return 0
        return await self._call(partial(book.forget, recipient_id=recipient_id), light=True)

    async def _call(self, work: Callable[[sqlite3.Connection], _T], *, light: bool = False) -> _T:
        if self._writer is None:
            raise StoreError("the SQLite store is not open")
        return await self._writer.run(work, light=light)


# The work: functions of the connection, run by the writer inside the open transaction.


def _load(
    conn: sqlite3.Connection, *, delivery_id: str, unchanging: Unchanging | None = None
) -> Delivery | None:
    row = conn.execute(_SELECT_DELIVERY, (delivery_id,)).fetchone()
    if row is None:
        return None
    return _with_attempts(conn, [row], unchanging)[0]


def _with_attempts(
    conn: sqlite3.Connection, rows: Sequence[Sequence[Any]], unchanging: Unchanging | None = None
) -> list[Delivery]:
    """Deliveries from rows of `DELIVERY_COLUMNS`, with their attempts and receipts read
    in two queries for all of them."""
    ids = [row[0] for row in rows]
    marks = ", ".join("?" * len(ids))
    receipts: dict[str, list[Receipt]] = {}
    for r in conn.execute(_SELECT_RECEIPTS.format(marks=marks), ids):
        receipts.setdefault(r[0], []).append(receipt_from_row(r[1:]))
    attempts: dict[str, list[Attempt]] = {delivery_id: [] for delivery_id in ids}
    for a in conn.execute(_SELECT_ATTEMPTS.format(marks=marks), ids):
        attempts[a[1]].append(attempt_from_row(a, receipts.get(a[0], [])))
    return [delivery_from_row(row, attempts[row[0]], unchanging) for row in rows]


def _write_attempts(conn: sqlite3.Connection, attempts: Sequence[Attempt]) -> bool:
    """Upsert `attempts` with their receipts; attach orphan receipts to any that has a
    provider message id. True if an orphan was attached."""
    attached = False
    for attempt in attempts:
        if attempt.provider_message_id is not None:
            key = (attempt.provider, attempt.provider_message_id)
            orphans = conn.execute(
                f"SELECT {_R} FROM orphan_receipts WHERE provider = ? "  # noqa: S608
                "AND provider_message_id = ? ORDER BY seq",
                key,
            ).fetchall()
            if orphans:
                conn.execute(
                    "DELETE FROM orphan_receipts WHERE provider = ? AND provider_message_id = ?",
                    key,
                )
                attempt = attempt.copy()  # the caller's copy stays as it was
                for orphan in orphans:
                    attached = attempt.absorb(receipt_from_row(orphan)) or attached
        conn.execute(_UPSERT_ATTEMPT, attempt_values(attempt))
        if attempt.receipts:
            conn.executemany(
                _INSERT_RECEIPT, [(attempt.id, *receipt_values(r)) for r in attempt.receipts]
            )
    return attached


def _create(
    conn: sqlite3.Connection, *, delivery: Delivery, unchanging: Unchanging
) -> tuple[Delivery, bool]:
    key = delivery.idempotency_key
    if key is not None:
        row = conn.execute("SELECT id FROM deliveries WHERE idempotency_key = ?", (key,)).fetchone()
        if row is not None:
            existing = _load(conn, delivery_id=row[0], unchanging=unchanging)
            assert existing is not None
            return existing, False
    conn.execute(_INSERT_DELIVERY, delivery_values(delivery))
    _write_attempts(conn, delivery.attempts)
    unchanging.remember(delivery)
    return delivery.copy(), True


def _claim(
    conn: sqlite3.Connection, *, now: float, limit: int, lease: float, unchanging: Unchanging
) -> list[Claim]:
    ids: dict[str, None] = {}
    for query in _DUE:
        if len(ids) >= limit:
            break
        for (delivery_id,) in conn.execute(query, (now, limit)):
            ids[delivery_id] = None
    if not ids:
        return []
    chosen = list(ids)[:limit]
    until = now + lease
    rows = conn.execute(
        _CLAIM.format(marks=", ".join("?" * len(chosen))), (until, *chosen)
    ).fetchall()
    deliveries = _with_attempts(conn, [row[1:] for row in rows], unchanging)
    claims = [Claim(d, int(row[0]), until) for d, row in zip(deliveries, rows, strict=True)]
    failpoints.hit("claim.before")  # leased in a transaction that never commits
    return claims


def _commit(conn: sqlite3.Connection, *, claim: Claim, transition: Transition) -> None:
    # The lease holder alone moves the delivery row on, so the transition says everything
    # to write; only the attempts it touches are read back, for receipts that came meanwhile.
    delivery_id = claim.delivery.id
    if transition.release or transition.status is not None or transition.skipped:
        _move(conn, claim, transition)
    else:
        # mid-transition, the lease kept (the intent before a provider call): the timer
        # does not count while the lease holds (a lapsed lease makes the delivery due
        # whatever it says), so unless the step moved only the fence is checked
        row = conn.execute(
            "SELECT token, step FROM deliveries WHERE id = ?", (delivery_id,)
        ).fetchone()
        if row is None or int(row[0]) != claim.token:
            raise LeaseLost(f"delivery {delivery_id} is leased by another worker now")
        if transition.step is not None and transition.step != row[1]:
            conn.execute(
                "UPDATE deliveries SET step = ? WHERE id = ?", (transition.step, delivery_id)
            )
    touched: list[Attempt] = []
    for attempt in transition.attempts:
        if (
            attempt.provider_message_id is None
            and not attempt.receipts
            and conn.execute(_INSERT_NEW_ATTEMPT, attempt_values(attempt)).rowcount
        ):
            continue  # a new attempt: nothing stored to merge with, nothing to attach
        touched.append(_merge_stored(conn, attempt))
    if _write_attempts(conn, touched):
        conn.execute("UPDATE deliveries SET poked = 1 WHERE id = ?", (delivery_id,))


def _move(conn: sqlite3.Connection, claim: Claim, transition: Transition) -> None:
    """Write the delivery row's part of `transition`, fenced by the claim's token."""
    skipped = None
    if transition.skipped:
        (stored,) = conn.execute(
            "SELECT skipped FROM deliveries WHERE id = ?", (claim.delivery.id,)
        ).fetchone() or ("[]",)
        skipped = encode_skipped([*decode_skipped(stored), *transition.skipped])
    status = transition.status
    final = int(status is not None)  # ints, not bools: see `_same`
    fenced = conn.execute(
        _COMMIT_DELIVERY,
        (
            transition.step,
            None if status is None else status.value,
            final,
            transition.channel,
            final,
            transition.finished_ts,
            transition.wake_ts,
            skipped,
            int(transition.release),
            claim.delivery.id,
            claim.token,
        ),
    ).rowcount
    if not fenced:
        raise LeaseLost(f"delivery {claim.delivery.id} is leased by another worker now")


def _merge_stored(conn: sqlite3.Connection, attempt: Attempt) -> Attempt:
    """The writer's copy of `attempt` with what the store learned of it meanwhile: a message
    id from a receipt that named the attempt, and receipts (which move its status on)."""
    stored = conn.execute(_SELECT_STORED, (attempt.id,)).fetchall()
    if not stored:
        return attempt
    merged = attempt.copy()
    if merged.provider_message_id is None:
        merged.provider_message_id = stored[0][0]
    for row in stored:
        if row[1] is not None:
            merged.absorb(receipt_from_row(row[1:]))
    return merged


def _update(
    conn: sqlite3.Connection, delivery: Delivery, *, release: bool, poke: bool, bump: bool
) -> None:
    conn.execute(
        _UPDATE_DELIVERY,
        (
            delivery.step,
            delivery.status.value,
            delivery.channel,
            delivery.finished_ts,
            delivery.wake_ts,
            encode_skipped(delivery.skipped),
            int(release),
            int(poke),
            int(bump),
            delivery.id,
        ),
    )


def _record(
    conn: sqlite3.Connection, *, receipts: list[Receipt], now: float
) -> list[ReceiptResult]:
    results: list[ReceiptResult] = []
    for receipt in receipts:
        found = conn.execute(
            "SELECT id, delivery_id, status FROM attempts WHERE provider = ? "
            "AND provider_message_id = ? ORDER BY seq LIMIT 1",
            (receipt.provider, receipt.provider_message_id),
        ).fetchone()
        if found is None and receipt.attempt_id is not None:
            found = _adopt(conn, receipt)
        if found is None:
            results.append(ReceiptResult(receipt, None, _keep_orphan(conn, receipt, now)))
            continue
        attempt_id, delivery_id, status = found
        fresh = conn.execute(_INSERT_RECEIPT, (attempt_id, *receipt_values(receipt))).rowcount
        if fresh:
            after = status_after(AttemptStatus(status), receipt.status)
            if after.value != status:
                conn.execute(
                    "UPDATE attempts SET status = ? WHERE id = ?", (after.value, attempt_id)
                )
            conn.execute(
                "UPDATE deliveries SET poked = 1 WHERE id = ? AND status = 'pending' AND poked = 0",
                (delivery_id,),
            )
        results.append(ReceiptResult(receipt, delivery_id, not fresh))
    return results


def _adopt(conn: sqlite3.Connection, receipt: Receipt) -> tuple[str, str, str] | None:
    """The attempt a receipt names by our own attempt id (the provider echoed it); one that
    did not know its message id learns it here."""
    row = conn.execute(
        "SELECT id, delivery_id, status, provider_message_id FROM attempts "
        "WHERE id = ? AND provider = ?",
        (receipt.attempt_id, receipt.provider),
    ).fetchone()
    if row is None:
        return None
    if row[3] is None:
        conn.execute(
            "UPDATE attempts SET provider_message_id = ? WHERE id = ?",
            (receipt.provider_message_id, row[0]),
        )
    return row[0], row[1], row[2]


def _keep_orphan(conn: sqlite3.Connection, receipt: Receipt, now: float) -> bool:
    """Keep a receipt for a message not (yet) known; True if it was kept before."""
    conn.execute("DELETE FROM orphan_receipts WHERE kept_ts <= ?", (now - ORPHAN_TTL,))
    if not conn.execute(_INSERT_ORPHAN, (*receipt_values(receipt), now)).rowcount:
        return True
    (count,) = conn.execute("SELECT count(*) FROM orphan_receipts").fetchone()
    if count > ORPHAN_LIMIT:
        conn.execute(
            "DELETE FROM orphan_receipts WHERE seq IN "
            "(SELECT seq FROM orphan_receipts ORDER BY seq LIMIT ?)",
            (count - ORPHAN_LIMIT,),
        )
    return False


def _cancel(conn: sqlite3.Connection, *, delivery_id: str, now: float) -> Delivery | None:
    delivery = _load(conn, delivery_id=delivery_id)
    if delivery is None or delivery.status is not DeliveryStatus.PENDING:
        return delivery
    transition = cancel_transition(delivery, now)
    apply_transition(delivery, transition)
    _write_attempts(conn, written(delivery, transition))
    _update(conn, delivery, release=True, poke=False, bump=True)
    return delivery


def _next_wake(conn: sqlite3.Connection) -> float | None:
    if conn.execute(
        "SELECT 1 FROM deliveries WHERE status = 'pending' AND poked = 1 "
        "AND lease_until <= 0 LIMIT 1"
    ).fetchone():
        return 0.0
    times: list[Any] = [
        conn.execute(
            "SELECT wake_ts FROM deliveries WHERE status = 'pending' "
            "AND wake_ts IS NOT NULL AND lease_until = 0 "
            "ORDER BY wake_ts LIMIT 1"
        ).fetchone(),
        conn.execute(
            "SELECT min(lease_until) FROM deliveries WHERE status = 'pending' AND lease_until > 0"
        ).fetchone(),
    ]
    found = [float(t[0]) for t in times if t is not None and t[0] is not None]
    return min(found, default=None)


def _purge(conn: sqlite3.Connection, *, cutoff: float, now: float) -> int:
    conn.execute("DELETE FROM orphan_receipts WHERE kept_ts <= ?", (now - ORPHAN_TTL,))
    return conn.execute(
        "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries "
        "WHERE status <> 'pending' AND finished_ts <= ? LIMIT ?)",
        (cutoff, PURGE_CHUNK),
    ).rowcount
