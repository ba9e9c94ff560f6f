"""The PostgreSQL store: `store: postgresql://user@host/db`, for many workers on many hosts.

psycopg 3 (async) with psycopg_pool. Any number of processes share one
database: `claim` leases due rows with `SELECT ... FOR UPDATE SKIP LOCKED`,
so workers never wait on each other's rows and a dead worker's leases are
taken over when they expire. Every write a worker makes is fenced: it
matches the lease token (`... WHERE id = %s AND token = %s`) or writes
nothing and raises `LeaseLost`. Idempotency keys are a UNIQUE column
(`INSERT ... ON CONFLICT DO NOTHING`), so concurrent sends with one key make
one delivery. Receipts find their attempt through the index on
(provider, provider_message_id).

Lock order, so writes never deadlock: a commit takes the advisory locks of
the message ids it writes (sorted), then the delivery row; a receipt takes
the delivery row, or, for a message not known yet, that message id's
advisory lock first (so an orphan receipt and the commit that makes its
message known cannot miss each other).

URL options (taken out before the URL reaches libpq): `schema` (default
`cascade_notify`), `pool_max` (connections, default 10), `timeout` (seconds
a call may take before it fails with StoreError, default 10), `prepared`
(`false` behind PgBouncer in transaction mode).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from cascade_notify import _logmask
from cascade_notify.errors import LeaseLost, StoreError
from cascade_notify.learned import Seen
from cascade_notify.models import CallStatus, Delivery, DeliveryStatus, QueuedCall, Receipt, Signal
from cascade_notify.observe.compute import check_limit
from cascade_notify.observe.types import (
    DeliveryPage,
    DeliveryQuery,
    Dimension,
    FailureRow,
    Stats,
    check_by,
    check_window,
    decode_cursor,
)
from cascade_notify.stores import _addresses, _calls
from cascade_notify.stores import _failpoints as failpoints
from cascade_notify.stores import _outbox_sql as outbox
from cascade_notify.stores._codec import DELIVERY_COLUMNS, delivery_values
from cascade_notify.stores._common import PURGE_CHUNK
from cascade_notify.stores.base import (
    Claim,
    OutboxItem,
    ReceiptResult,
    SendFacts,
    SendReads,
    SignalOutcome,
    Transition,
)
from cascade_notify.stores.memory import ORPHAN_TTL
from cascade_notify.stores.postgres import addresses as book
from cascade_notify.stores.postgres import calls, history, queue, reading, rows, shared
from cascade_notify.stores.postgres import observe as views
from cascade_notify.stores.postgres import schema as schema_module
from cascade_notify.stores.postgres.connection import (
    Refused,
    _autocommit,
    _connection_lost,
    _flag,
    _Pool,
    _refused,
    _said,
)
from cascade_notify.stores.postgres.group import Group
from cascade_notify.stores.postgres.rows import load, upsert_attempts

T = TypeVar("T")
Conn = rows.Conn
log = _logmask.logger("cascade_notify.stores.postgres")

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_OPTIONS = ("schema", "pool_max", "timeout", "prepared")
_RETRIES = 3  # a deadlock or serialization failure is retried this many times in all

_INSERT_DELIVERY = (
    f"INSERT INTO deliveries ({', '.join(DELIVERY_COLUMNS)}, poked) VALUES ("  # noqa: S608
    + ", ".join("%s::jsonb" if c in calls.JSONB_COLUMNS else "%s" for c in DELIVERY_COLUMNS)
    + ", %s) ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
)
_CLAIM = f"""{calls.DUE}
    UPDATE deliveries d SET token = d.token + 1, lease_until = %(until)s, poked = false,
        status = 'pending'
    FROM due WHERE d.id = due.id
    RETURNING d.id, d.token
"""  # noqa: S608 - constant text
# each priority's earliest, through its range of the index
_NEXT_WAKE = (
    "SELECT least("
    "(SELECT min(due_ts) FROM deliveries "
    "WHERE status IN ('pending', 'scheduled') AND priority = 0), "
    "(SELECT min(due_ts) FROM deliveries "
    "WHERE status IN ('pending', 'scheduled') AND priority = 1), "
    "(SELECT min(due_ts) FROM deliveries "
    "WHERE status IN ('pending', 'scheduled') AND priority = 2))"
)


class PostgresStore:
    """`store: postgresql://...` (or `postgres://`); see the module docstring for options."""

    #: Whether other processes may change what this store holds (a shared server).
    shared: ClassVar[bool] = True

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "cascade_notify",
        pool_max: int = 10,
        timeout: float = 10.0,
        prepared: bool = True,
    ) -> None:
        if not _IDENTIFIER.match(schema):
            raise StoreError(f"schema {schema!r} is not a plain SQL name (letters, digits, _)")
        self.dsn = dsn
        self.schema = schema
        self.pool_max = pool_max
        self.timeout = timeout
        self.prepared = prepared
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._watcher: asyncio.Future[None] | None = None
        self._in_flight = 0
        self._abandoned: set[asyncio.Future[Any]] = set()
        self._sweep_ts = 0.0
        self._outbox_kinds: frozenset[str] = frozenset()
        # concurrent calls share a transaction (see `_pg_group`)
        self._commits: Group[str, bool] = Group(self._commit_group, alone=_refused)
        self._creates: Group[tuple[Delivery, str], tuple[Delivery, bool]] = Group(
            self._create_group, alone=_refused
        )
        self._reading: Group[reading.Item, reading.Answer] = Group(
            self._read_create_group, alone=_refused
        )

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        parts = urlsplit(url)
        ours: dict[str, str] = {}
        rest: list[tuple[str, str]] = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            (ours.__setitem__(key, value) if key in _OPTIONS else rest.append((key, value)))
        dsn = urlunsplit(parts._replace(scheme="postgresql", query=urlencode(rest)))
        try:
            return cls(
                dsn,
                schema=ours.get("schema", "cascade_notify"),
                pool_max=int(ours.get("pool_max", "10")),
                timeout=float(ours.get("timeout", "10")),
                prepared=_flag(ours.get("prepared", "true")),
            )
        except ValueError as exc:
            raise StoreError(f"store URL: bad option value ({exc})") from None

    def __repr__(self) -> str:
        return f"<PostgresStore schema={self.schema}>"

    def idle(self) -> bool:
        """No call is in flight (the notifier's idle check, which a fake clock reads)."""
        return self._in_flight == 0

    # lifecycle

    async def open(self) -> None:
        """Connect; create the schema in an empty database; refuse an old or new one."""
        await self._start()
        try:
            await self._run(lambda conn: schema_module.check_or_create(conn, self.schema))
        except BaseException:
            await self.close()
            raise

    async def migrate(self) -> tuple[int, int]:
        """Bring the schema to this code's version; return (version before, version now).
        Opens the store if it is not open; it stays open."""
        await self._start()
        return await self._run(lambda conn: schema_module.migrate(conn, self.schema))

    async def close(self) -> None:
        if self._watcher is not None:
            watcher, self._watcher = self._watcher, None
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        if self._pool is not None:
            pool, self._pool = self._pool, None
            for task in list(self._abandoned):
                task.cancel()
            if self._abandoned:
                await asyncio.wait(self._abandoned, timeout=self.timeout)
            await pool.close(timeout=self.timeout)

    def _connection_kwargs(self) -> dict[str, Any]:
        return {
            "autocommit": True,
            # PgBouncer in transaction mode cannot keep prepared statements: prepared=false
            "prepare_threshold": 5 if self.prepared else None,
            # a process stopped inside a transaction (SIGSTOP, a pause) would hold its row
            # locks for ever: the server ends such a session after `timeout` seconds
            "options": f"-c search_path={self.schema} "
            f"-c idle_in_transaction_session_timeout={int(self.timeout * 1000)}",
            "connect_timeout": max(2, round(self.timeout / 2)),
            # a dead or black-holed server is noticed in seconds, not at TCP's default
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
            "tcp_user_timeout": int(self.timeout * 1000),
        }

    async def _start(self) -> None:
        if self._pool is not None:
            return
        pool: AsyncConnectionPool[Conn] = _Pool(
            self.dsn,
            min_size=1,
            max_size=self.pool_max,
            open=False,
            timeout=self.timeout,
            configure=self._configure if self.prepared else None,
            kwargs=self._connection_kwargs(),
            name="cascade-notify",
        )
        try:
            await pool.open(wait=True, timeout=self.timeout)
        except PoolTimeout as exc:
            await pool.close()
            raise StoreError(
                f"cannot connect to PostgreSQL within {self.timeout:g} s: {exc}"
            ) from None
        self._pool = pool

    @staticmethod
    async def _configure(conn: Conn) -> None:
        # the one-round-trip claim, commit and receipts (see `_pg_calls`): session functions,
        # which PgBouncer in transaction mode (prepared=false) would not keep
        for statement in calls.SESSION_FUNCTIONS:
            await conn.execute(statement)

    async def _run(self, work: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `work` on a pooled connection, within `timeout` seconds whatever the network
        does; every driver error becomes a StoreError here."""
        if self._pool is None:
            raise StoreError("the PostgreSQL store is not open")
        self._in_flight += 1
        # a task of its own: on a half-open connection, cancelling a query waits for a
        # cancel request that may never be answered, and the caller must not wait with it
        task = asyncio.ensure_future(self._attempt(work))
        try:
            done, _ = await asyncio.wait({task}, timeout=self.timeout)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            self._in_flight -= 1
        if not done:
            task.cancel()  # psycopg gives the connection up; the pool discards it
            self._abandoned.add(task)
            task.add_done_callback(self._forget)
            raise StoreError(
                f"PostgreSQL did not answer within {self.timeout:g} s (is it reachable?); "
                "the write may or may not have happened"
            )
        return task.result()

    def _forget(self, task: asyncio.Future[Any]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: it was reported to the caller as a timeout

    async def _attempt(self, work: Callable[[Conn], Awaitable[T]]) -> T:
        assert self._pool is not None
        for attempt in range(_RETRIES):
            try:
                async with self._pool.connection() as conn:
                    return await work(conn)
            except (errors.DeadlockDetected, errors.SerializationFailure) as exc:
                if attempt == _RETRIES - 1:
                    raise StoreError(f"PostgreSQL rolled the write back: {exc}") from exc
            except PoolTimeout as exc:
                raise StoreError(
                    f"no PostgreSQL connection within {self.timeout:g} s "
                    f"(is the server reachable?): {exc}"
                ) from None
            except UnicodeEncodeError as exc:
                # (a lone surrogate, which no client encoding holds; the position only)
                raise Refused(
                    f"PostgreSQL cannot take this text: {exc.reason} at position {exc.start}"
                ) from exc
            except psycopg.Error as exc:
                if _connection_lost(exc):
                    raise StoreError(f"PostgreSQL connection failed: {exc}") from exc
                raise Refused(f"PostgreSQL refused: {_said(exc)}") from exc
        raise AssertionError("unreachable")

    # news from other processes

    async def watch(self, wake: Callable[[], None]) -> None:
        """Call `wake` whenever another process makes a delivery due: `create` and
        `record_receipts` notify the schema's channel (`LISTEN`/`NOTIFY`), so a worker
        takes a delivery sent by a web process at once instead of at its next poll.
        Behind PgBouncer in transaction mode (`prepared=false`) notifications do not
        reach a listener: the worker polls, as without this."""
        if self._watcher is None and self.prepared:
            self._watcher = asyncio.ensure_future(self._listen(wake))

    async def _listen(self, wake: Callable[[], None]) -> None:
        pause = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.dsn, **self._connection_kwargs()
                ) as conn:
                    await conn.execute(f'LISTEN "{calls.channel(self.schema)}"')
                    pause = 0.5
                    wake()  # whatever became due while nobody listened
                    async for _ in conn.notifies():
                        wake()
            except psycopg.Error as exc:
                log.warning(
                    "listening for due deliveries failed (%s); polling until it is back", exc
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 30.0)

    # schema

    # the Store protocol

    async def create(self, delivery: Delivery) -> tuple[Delivery, bool]:
        async def work(conn: Conn) -> tuple[Delivery, bool]:
            # without attempts (as send() makes it) one statement is the whole transaction
            async with conn.transaction() if delivery.attempts else _autocommit():
                cur = await conn.execute(
                    _INSERT_DELIVERY,
                    (*delivery_values(delivery), delivery.status is DeliveryStatus.PENDING),
                )
                if await cur.fetchone() is not None:
                    await upsert_attempts(conn, delivery.attempts)
                    return delivery.copy(), True
            cur = await conn.execute(
                "SELECT id FROM deliveries WHERE idempotency_key = %s", (delivery.idempotency_key,)
            )
            row = await cur.fetchone()
            if row is None:  # pragma: no cover - the key's owner was deleted in between
                raise StoreError("the delivery with this idempotency key just vanished; retry")
            return (await load(conn, [row[0]]))[row[0]], False

        failpoints.hit("send.before")
        if self.prepared and not delivery.attempts:
            # as send() makes it: concurrent sends share one INSERT
            text = calls.delivery_json(delivery)
            self._in_flight += 1  # queued for a group: not idle
            try:
                result = await self._creates.submit((delivery, text))
            finally:
                self._in_flight -= 1
        else:
            result = await self._run(work)
        failpoints.hit("send.after")
        return result

    async def create_read(
        self, reads: SendReads, build: Callable[[SendFacts], Delivery]
    ) -> tuple[Delivery, bool]:
        """`create`, the reads on its connection, in one statement with those of the sends
        of its group (`ReadingCreate`, the work in `postgres.reading`)."""
        failpoints.hit("send.before")
        self._in_flight += 1  # queued for a group: not idle
        try:
            result = await self._reading.submit((_addresses.asked(reads), build))
        finally:
            self._in_flight -= 1
        failpoints.hit("send.after")
        return reading.answer(result)

    async def _read_create_group(self, items: Sequence[reading.Item]) -> list[reading.Answer]:
        return await self._run(lambda conn: reading.create(conn, items))

    async def create_many(
        self, deliveries: Sequence[Delivery]
    ) -> list[tuple[Delivery, bool] | Exception]:
        """`create` for each, in one statement (one transaction); when the server refuses
        one, each is written alone, so only that one gets its error. (`Batching`)"""
        if not deliveries:
            return []
        failpoints.hit("send.before")
        news: list[tuple[Delivery, str]] = []
        answers: list[tuple[Delivery, bool] | Exception | None] = []
        for delivery in deliveries:
            try:
                news.append((delivery, calls.delivery_json(delivery)))
                answers.append(None)
            except StoreError as exc:  # a value JSON cannot hold: this item's alone
                answers.append(exc)
        try:
            made: list[tuple[Delivery, bool] | Exception] = list(await self._create_group(news))
        except Refused:
            made = []
            for item in news:
                try:
                    made.extend(await self._create_group([item]))
                except Refused as exc:
                    made.append(exc)
        failpoints.hit("send.after")
        found = iter(made)
        return [next(found) if answer is None else answer for answer in answers]

    async def reschedule(self, delivery_id: str, start: float) -> Delivery | None:
        """Move a scheduled delivery's start to `start`, its expiry by as much; a delivery
        that started is left as it is. Return it as it stands, or None. (`Rescheduling`)"""

        async def work(conn: Conn) -> Delivery | None:
            await conn.execute(calls.RESCHEDULE, {"start": start, "id": delivery_id})
            return (await load(conn, [delivery_id])).get(delivery_id)

        return await self._run(work)

    async def _create_group(
        self, news: Sequence[tuple[Delivery, str]]
    ) -> list[tuple[Delivery, bool]]:
        return await self._run(lambda conn: calls.create(conn, news))

    async def get(self, delivery_id: str) -> Delivery | None:
        async def work(conn: Conn) -> Delivery | None:
            return (await load(conn, [delivery_id])).get(delivery_id)

        return await self._run(work)

    async def claim(self, now: float, *, limit: int, lease: float) -> list[Claim]:
        until = now + lease

        if self.prepared:
            failpoints.hit("claim.before")  # nothing leased yet
            claims = await self._run(lambda conn: calls.claim(conn, now, limit, until))
            if claims:
                failpoints.hit("claim.after")
            return claims

        async def work(conn: Conn) -> list[Claim]:
            async with conn.transaction():
                cur = await conn.execute(_CLAIM, {"now": now, "limit": limit, "until": until})
                tokens = {row[0]: int(row[1]) for row in await cur.fetchall()}
                if not tokens:
                    return []
                loaded = await load(conn, list(tokens))
                failpoints.hit("claim.before")  # leased in a transaction that never commits
            return [Claim(loaded[i], token, until) for i, token in tokens.items()]

        claims = await self._run(work)
        if claims:
            failpoints.hit("claim.after")
        return claims

    async def commit(self, claim: Claim, transition: Transition) -> None:
        path = failpoints.path_of(transition)
        failpoints.hit(f"{path}.before")
        if self.prepared:
            self._in_flight += 1  # queued for a group: not idle
            try:
                written = await self._commits.submit(calls.write_json(claim, transition))
                if not written:
                    raise LeaseLost(f"delivery {claim.delivery.id} is leased by another worker now")
            finally:
                self._in_flight -= 1
        else:
            await self._run(lambda conn: rows.commit(conn, claim, transition))
        failpoints.hit(f"{path}.after")

    async def _commit_group(self, writes: Sequence[str]) -> list[bool]:
        return await self._run(lambda conn: calls.commit(conn, writes))

    async def record_receipts(self, receipts: Sequence[Receipt], now: float) -> list[ReceiptResult]:
        results: list[ReceiptResult] = []
        failpoints.hit("receipt.before")
        if not receipts:
            pass
        elif self.prepared:
            # the batch in one statement: message ids' advisory locks, then rows, each sorted
            events = "receipt" in self._outbox_kinds
            results = await self._run(lambda conn: calls.record(conn, receipts, now, events))
        else:
            # one transaction each: a receipt holds at most one row lock and one advisory lock
            events = "receipt" in self._outbox_kinds
            for receipt in receipts:
                results.append(
                    await self._run(partial(rows.record, receipt=receipt, now=now, events=events))
                )
        failpoints.hit("receipt.after")
        return results

    async def cancel(self, delivery_id: str, now: float) -> Delivery | None:
        events = "finished" in self._outbox_kinds
        return await self._run(lambda conn: rows.cancel(conn, delivery_id, now, events))

    # Outbox: outcome webhooks to post (`stores.base.Outbox`)

    def outbox_kinds(self, kinds: frozenset[str]) -> None:
        self._outbox_kinds = kinds

    async def outbox_claim(self, now: float, *, limit: int, lease: float) -> list[OutboxItem]:
        async def work(conn: Conn) -> list[OutboxItem]:
            params = {"now": now, "limit": limit, "until": now + lease}
            cur = await conn.execute(outbox.PG_CLAIM, params)
            found = [outbox.item(row) for row in await cur.fetchall()]
            return sorted(found, key=lambda i: i.event.ts)

        return await self._run(work)

    async def outbox_sent(self, items: Sequence[OutboxItem], now: float) -> list[bool]:
        async def work(conn: Conn) -> list[bool]:
            ids = [i.event.id for i in items]
            cur = await conn.execute(_SENT, (now, ids, [i.token for i in items]))
            marked = {row[0] for row in await cur.fetchall()}
            return [i in marked for i in ids]

        return await self._run(work) if items else []

    async def outbox_retry(self, item: OutboxItem, at: float) -> bool:
        async def work(conn: Conn) -> bool:
            cur = await conn.execute(_RETRY, (at, item.event.id, item.token))
            return bool(cur.rowcount)

        return await self._run(work)

    async def outbox_next(self) -> float | None:
        async def work(conn: Conn) -> float | None:
            row = await (await conn.execute(outbox.PG_NEXT)).fetchone()
            return None if row is None or row[0] is None else float(row[0])

        return await self._run(work)

    async def next_wake(self) -> float | None:
        async def work(conn: Conn) -> float | None:
            row = await (await conn.execute(_NEXT_WAKE)).fetchone()
            return None if row is None or row[0] is None else float(row[0])

        return await self._run(work)

    # Observable: the read-only views (the work in `postgres.observe`)

    async def list_deliveries(
        self, query: DeliveryQuery, *, cursor: str | None = None, limit: int = 50
    ) -> DeliveryPage:
        """Deliveries matching `query`, newest first, `limit` a page after `cursor`."""
        check_limit(limit)
        after = decode_cursor(cursor) if cursor is not None else None
        return await self._run(lambda conn: views.list_deliveries(conn, query, after, limit))

    async def stats(self, since: float, until: float, by: Sequence[Dimension]) -> Stats:
        """Statistics of the deliveries created in `[since, until)`, grouped `by`."""
        dims = check_by(by)
        check_window(since, until)
        return await self._run(lambda conn: views.stats(conn, since, until, dims))

    async def unfinished(self) -> dict[str, int]:
        """How many deliveries are not final, by status."""
        return await self._run(views.unfinished)

    async def failures(self, since: float, until: float) -> list[FailureRow]:
        """Failed attempts of the deliveries created in `[since, until)`, by kind."""
        check_window(since, until)
        return await self._run(lambda conn: views.failures(conn, since, until))

    # AddressBook (the work in `postgres.addresses`)

    async def record_signals(self, signals: Sequence[Signal]) -> list[SignalOutcome]:
        checked = _addresses.checked(signals)
        if not checked:
            return []
        return await self._run(lambda conn: book.record(conn, checked))

    async def unusable(self, addresses: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Signal]:
        wanted = _addresses.wanted(addresses)
        if not wanted:
            return {}
        return await self._run(lambda conn: book.unusable(conn, wanted))

    async def linked(self, recipient_id: str) -> dict[str, str]:
        if not _addresses.storable(recipient_id):
            return {}
        return await self._run(lambda conn: book.linked(conn, recipient_id))

    async def known(self, recipient_id: str) -> dict[str, Signal]:
        if not _addresses.storable(recipient_id):
            return {}
        return await self._run(lambda conn: book.known(conn, recipient_id))

    async def history(self, recipient_id: str) -> dict[str, Seen]:
        """The recipient's channel history (`Learning`): one primary-key range read."""
        if not _addresses.storable(recipient_id):
            return {}

        async def work(conn: Conn) -> dict[str, Seen]:
            cur = await conn.execute(history.HISTORY, (recipient_id,))
            return history.seen(await cur.fetchall())

        return await self._run(work)

    async def forget(self, recipient_id: str) -> int:
        if not _addresses.storable(recipient_id):
            return 0
        return await self._run(lambda conn: book.forget(conn, recipient_id))

    # CallQueue (the work in `postgres.queue`)

    async def put_call(self, call: QueuedCall) -> bool:
        return await self._run(lambda conn: queue.put(conn, call))

    async def calls(
        self, status: Sequence[CallStatus] | None = None, *, limit: int = 100
    ) -> list[QueuedCall]:
        states = _calls.wanted(status)
        return await self._run(lambda conn: queue.listed(conn, states, limit))

    async def call(self, task_id: str) -> QueuedCall | None:
        return await self._run(lambda conn: queue.one(conn, task_id))

    async def claim_call(
        self, operator: str, now: float, task_id: str | None = None
    ) -> QueuedCall | None:
        return await self._run(lambda conn: queue.claim(conn, operator, now, task_id))

    async def close_call(
        self, task_id: str, status: CallStatus, now: float, note: str | None = None
    ) -> tuple[QueuedCall | None, bool]:
        return await self._run(lambda conn: queue.close(conn, task_id, status, now, note))

    # SharedState: what the guards of all workers on this database share

    async def shared_bump(
        self, key: str, add: float, *, floor: float, now: float, ttl: float
    ) -> float:
        """Set the number at `key` to max(it, floor) + add (absent: floor + add); return it."""

        async def work(conn: Conn) -> float:
            if now >= self._sweep_ts:  # expired keys go once a minute, from each process
                self._sweep_ts = now + 60.0
                await shared.sweep(conn, now)
            return await shared.bump(conn, key, add, floor, now, ttl)

        return await self._run(work)

    async def shared_get(self, prefix: str, now: float) -> dict[str, tuple[int, str]]:
        """Every live text whose key starts with `prefix`: key -> (version, text)."""
        return await self._run(lambda conn: shared.get(conn, prefix, now))

    async def shared_put(
        self, key: str, value: str, *, version: int, now: float, ttl: float
    ) -> int | None:
        """Write `value` if the key's version is still `version` (0: absent); return the new
        version, or None when another writer got there first."""
        return await self._run(lambda conn: shared.put(conn, key, value, version, now, ttl))

    async def purge(self, older_than: float, now: float) -> int:
        """Delete deliveries final for at least `older_than` seconds, with everything of
        theirs, and orphan receipts past their time; return how many deliveries went."""

        async def chunk(conn: Conn) -> int:
            async with conn.transaction():
                await conn.execute(
                    "DELETE FROM orphan_receipts WHERE kept_ts <= %s", (now - ORPHAN_TTL,)
                )
                await shared.sweep(conn, now)
                await book.purge_spent(conn, now - _addresses.SPENT_TTL)
                cur = await conn.execute(
                    _PURGE,
                    (now - older_than, PURGE_CHUNK),
                )
                return cur.rowcount

        total = 0
        while True:
            count = await self._run(chunk)
            total += count
            if count < PURGE_CHUNK:
                return total


# one statement for a sender's batch
_SENT = (
    "UPDATE outbox o SET sent_ts = %s, lease_until = 0 "
    "FROM unnest(%s::text[], %s::bigint[]) AS s(id, token) "
    "WHERE o.id = s.id AND o.token = s.token AND o.sent_ts IS NULL RETURNING o.id"
)
_RETRY = outbox.pg(outbox.RETRY)
# (a delivery whose outcome webhooks are not all posted yet is kept)
_PURGE = (
    "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries "  # noqa: S608 - constant
    f"WHERE status <> 'pending' AND finished_ts <= %s AND id NOT IN ({outbox.UNSENT}) LIMIT %s)"
)

__all__ = ["PostgresStore"]
