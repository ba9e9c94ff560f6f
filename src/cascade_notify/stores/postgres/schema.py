"""The PostgreSQL schema, as numbered migrations (see `_sqlite_schema` for the SQLite twin).

The tables live in a schema of their own (`cascade_notify` unless the URL
says `?schema=...`), so they never meet an application's own `deliveries`.
Times are POSIX seconds from the injected clock, never `now()`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cascade_notify.errors import StoreError
from cascade_notify.stores._common import check_version

if TYPE_CHECKING:
    from cascade_notify.stores.postgres.rows import Conn

#: (version, statements): applied in order, in one transaction, to reach each version.
MIGRATIONS: list[tuple[int, tuple[str, ...]]] = [
    (
        1,
        (
            """CREATE TABLE deliveries (
            id text PRIMARY KEY,
            policy text NOT NULL,
            status text NOT NULL,
            step integer NOT NULL,
            channel text,
            created_ts double precision NOT NULL,
            expires_ts double precision NOT NULL,
            finished_ts double precision,
            wake_ts double precision,
            lease_until double precision NOT NULL DEFAULT 0,
            token bigint NOT NULL DEFAULT 0,
            poked boolean NOT NULL DEFAULT false,
            idempotency_key text UNIQUE,
            recipient jsonb NOT NULL,
            message jsonb NOT NULL,
            steps jsonb NOT NULL,
            skipped jsonb NOT NULL DEFAULT '[]'
        )""",
            "COMMENT ON COLUMN deliveries.lease_until IS '0: not leased'",
            "COMMENT ON COLUMN deliveries.token IS 'the fence: bumped by claim and cancel'",
            # the three ways a delivery becomes due, one partial index each (a BitmapOr in claim)
            "CREATE INDEX deliveries_poked ON deliveries (lease_until) "
            "WHERE status = 'pending' AND poked",
            "CREATE INDEX deliveries_wake ON deliveries (wake_ts) WHERE status = 'pending'",
            "CREATE INDEX deliveries_leased ON deliveries (lease_until) "
            "WHERE status = 'pending' AND lease_until > 0",
            "CREATE INDEX deliveries_finished ON deliveries (finished_ts) "
            "WHERE status <> 'pending'",
            """CREATE TABLE attempts (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id text NOT NULL UNIQUE,
            delivery_id text NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
            step integer NOT NULL,
            channel text NOT NULL,
            provider text NOT NULL,
            status text NOT NULL,
            started_ts double precision NOT NULL,
            finished_ts double precision,
            deadline_ts double precision,
            provider_message_id text,
            error text,
            code text,
            retry_ts double precision,
            cost double precision
        )""",
            "CREATE INDEX attempts_delivery ON attempts (delivery_id, seq)",
            "CREATE INDEX attempts_message ON attempts (provider, provider_message_id) "
            "WHERE provider_message_id IS NOT NULL",
            """CREATE TABLE receipts (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            attempt_id text NOT NULL REFERENCES attempts (id) ON DELETE CASCADE,
            provider text NOT NULL,
            provider_message_id text NOT NULL,
            status text NOT NULL,
            ts double precision NOT NULL,
            code text,
            error text,
            receipt_id text NOT NULL,
            echoed_attempt_id text,
            UNIQUE (attempt_id, receipt_id)
        )""",
            """CREATE TABLE orphan_receipts (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            provider text NOT NULL,
            provider_message_id text NOT NULL,
            status text NOT NULL,
            ts double precision NOT NULL,
            code text,
            error text,
            receipt_id text NOT NULL,
            echoed_attempt_id text,
            kept_ts double precision NOT NULL,
            UNIQUE (provider, provider_message_id, receipt_id)
        )""",
            "CREATE INDEX orphan_receipts_kept ON orphan_receipts (kept_ts)",
            # what the workers' guards share: rate-limit slots, brake counts, breakers
            """CREATE TABLE shared_numbers (
            key text PRIMARY KEY,
            value double precision NOT NULL,
            expires_ts double precision NOT NULL
        )""",
            """CREATE TABLE shared_texts (
            key text PRIMARY KEY,
            version bigint NOT NULL,
            text text NOT NULL,
            expires_ts double precision NOT NULL
        )""",
        ),
    ),
    (
        2,
        (
            # one index for `claim` instead of three: the time a pending delivery is due
            # (its lease's end while leased; at once when poked; else its timer), so a claim
            # reads the first rows of one index, oldest first, and stops at its limit; the
            # three partial indexes made it read every due row behind a BitmapOr, however
            # long the backlog. Generated: every write keeps it true by itself.
            "ALTER TABLE deliveries ADD COLUMN due_ts double precision GENERATED ALWAYS AS ("
            "CASE WHEN lease_until > 0 THEN lease_until WHEN poked THEN 0 ELSE wake_ts END"
            ") STORED",
            "COMMENT ON COLUMN deliveries.due_ts IS "
            "'when claim may take it: lease end, 0 when poked, else wake_ts; NULL: never'",
            "CREATE INDEX deliveries_due ON deliveries (due_ts) WHERE status = 'pending'",
            "DROP INDEX deliveries_poked",
            "DROP INDEX deliveries_wake",
            "DROP INDEX deliveries_leased",
        ),
    ),
    (
        3,
        (
            # Delivery.unusable: the channels known unusable when it was made, written once
            # by create (a constant default: no table rewrite)
            "ALTER TABLE deliveries ADD COLUMN unusable jsonb NOT NULL DEFAULT '{}'",
        ),
    ),
    (
        4,
        (
            # the address book (AddressBook): what providers learned about addresses
            """CREATE TABLE addresses (
            channel text NOT NULL,
            address text NOT NULL,
            state text NOT NULL,
            reason text NOT NULL,
            provider text NOT NULL,
            ts double precision NOT NULL,
            recipient_id text,
            PRIMARY KEY (channel, address)
        )""",
            "COMMENT ON COLUMN addresses.state IS "
            "'gone: unusable; linked: the address of recipient_id on the channel'",
            "COMMENT ON COLUMN addresses.ts IS 'of the signal that set this state'",
            "CREATE INDEX addresses_recipient ON addresses (recipient_id, channel) "
            "WHERE recipient_id IS NOT NULL",
        ),
    ),
    (
        5,
        (
            # Delivery.fingerprint: a hash of what an idempotency key was first sent with,
            # so its reuse for another message is refused (NULL on older rows: unchecked)
            "ALTER TABLE deliveries ADD COLUMN fingerprint text",
        ),
    ),
    (
        6,
        (
            # link tokens that linked (a digest each): a replayed deep link links nothing
            "CREATE TABLE link_tokens (key text PRIMARY KEY, ts double precision NOT NULL)",
            "CREATE INDEX link_tokens_ts ON link_tokens (ts)",
        ),
    ),
    (
        7,
        (
            # the call queue (CallQueue): call tasks for people, `type: call_queue`
            """CREATE TABLE calls (
            task_id text PRIMARY KEY,
            provider text NOT NULL,
            delivery_id text NOT NULL,
            recipient_id text NOT NULL,
            phone text NOT NULL,
            text text NOT NULL,
            summary text NOT NULL,
            not_before double precision NOT NULL,
            due_by double precision NOT NULL,
            created_ts double precision NOT NULL,
            task jsonb NOT NULL,
            status text NOT NULL,
            operator text,
            claimed_ts double precision,
            finished_ts double precision,
            note text
        )""",
            "COMMENT ON COLUMN calls.task IS 'the task as call_webhook posts it'",
            "CREATE INDEX calls_open ON calls (due_by) WHERE status IN ('open', 'claimed')",
        ),
    ),
    (
        8,
        (
            # priorities (Priority.rank: 0 high, 1 normal, 2 bulk) and scheduled sends
            # (status 'scheduled', due at wake_ts, which is their due_ts): a claim reads
            # each priority's due rows through its own range of one index, highest first
            "ALTER TABLE deliveries ADD COLUMN priority smallint NOT NULL DEFAULT 1",
            "COMMENT ON COLUMN deliveries.priority IS '0 high, 1 normal, 2 bulk'",
            "CREATE INDEX deliveries_due_by_priority ON deliveries (priority, due_ts) "
            "WHERE status IN ('pending', 'scheduled')",
            "DROP INDEX deliveries_due",
        ),
    ),
    (
        9,
        (
            # the read-only views (`cascade-notify deliveries`, `stats`): the deliveries
            # of a time window, and a recipient's newest first (the expression is the
            # one `stores._observe.POSTGRES.recipient_id` queries by)
            # covering: `stats` reads these columns only (index-only scans), never the
            # wide rows (recipient, message, steps)
            "CREATE INDEX deliveries_created ON deliveries (created_ts) "
            "INCLUDE (status, policy, channel, finished_ts, skipped)",
            "CREATE INDEX attempts_views ON attempts (delivery_id, seq) "
            "INCLUDE (step, channel, provider, status, cost)",
            "CREATE INDEX deliveries_recipient ON deliveries ((recipient->>'id'), created_ts)",
        ),
    ),
    (
        10,
        (
            # Attempt.segments, .encoding and .currency: what an SMS was billed as, and the
            # price a receipt reported (nullable, no default: no table rewrite)
            "ALTER TABLE attempts ADD COLUMN segments integer",
            "ALTER TABLE attempts ADD COLUMN encoding text",
            "ALTER TABLE attempts ADD COLUMN currency text",
            # Receipt.cost: the price a gateway reported with a status
            "ALTER TABLE receipts ADD COLUMN cost double precision",
            "ALTER TABLE orphan_receipts ADD COLUMN cost double precision",
        ),
    ),
    (
        11,
        (
            # the support page's search (`DeliveryQuery.phone`, `.email`): by a phone number
            # on any phone channel (a BitmapOr of the three), or by e-mail in any case;
            # partial, so rows without the field cost nothing
            *(
                f"CREATE INDEX deliveries_{name} ON deliveries "
                f"((recipient->>'{name}'), created_ts) WHERE (recipient->>'{name}') IS NOT NULL"
                for name in ("whatsapp", "sms", "call")
            ),
            "CREATE INDEX deliveries_email ON deliveries "
            "(lower(recipient->>'email'), created_ts) WHERE lower(recipient->>'email') IS NOT NULL",
        ),
    ),
    (
        12,
        (
            # the learned order's history (`Learning`): per recipient and channel, the rank
            # of its best success (a read counts later), when it last reached them and
            # when it last failed them; read whole per recipient at each send
            """CREATE TABLE channel_history (
            recipient_id text NOT NULL,
            channel text NOT NULL,
            rank double precision,
            reached_ts double precision,
            failed_ts double precision,
            PRIMARY KEY (recipient_id, channel)
        )""",
        ),
    ),
    (
        13,
        (
            # outcome webhooks (`events:`), written with the change they tell of; `seq`
            # numbers a delivery's in order; a sent one is kept until its delivery is purged
            """CREATE TABLE outbox (
            id text PRIMARY KEY,
            delivery_id text NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
            seq integer NOT NULL,
            kind text NOT NULL,
            ts double precision NOT NULL,
            data jsonb NOT NULL,
            sent_ts double precision,
            next_ts double precision NOT NULL,
            lease_until double precision NOT NULL DEFAULT 0,
            token bigint NOT NULL DEFAULT 0,
            tries integer NOT NULL DEFAULT 0,
            UNIQUE (delivery_id, seq)
        )""",
            "CREATE INDEX outbox_due ON outbox (next_ts) WHERE sent_ts IS NULL",
            "CREATE INDEX outbox_unsent ON outbox (delivery_id, seq) WHERE sent_ts IS NULL",
        ),
    ),
]


def current_version() -> int:
    """The schema version this code reads and writes."""
    return MIGRATIONS[-1][0]


async def version_of(conn: Conn, schema: str) -> int | None:
    """The schema version; 0 if the schema holds foreign tables only; None if empty."""
    cur = await conn.execute("SELECT to_regclass(%s)", (f'"{schema}".schema_version',))
    row = await cur.fetchone()
    if row is not None and row[0] is not None:
        found = await (await conn.execute("SELECT version FROM schema_version")).fetchone()
        return 0 if found is None else int(found[0])
    cur = await conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", (schema,)
    )
    count = await cur.fetchone()
    return 0 if count is not None and count[0] else None


async def check_or_create(conn: Conn, schema: str) -> None:
    async with conn.transaction():
        await _lock(conn, schema)
        version = await version_of(conn, schema)
        if version is None:
            await _apply(conn, schema, None)
        elif version == 0:
            raise StoreError(
                f"schema {schema} holds tables but no schema_version: "
                "it is not a cascade_notify store"
            )
        else:
            check_version(version, current_version(), f"schema {schema}")


async def migrate(conn: Conn, schema: str) -> tuple[int, int]:
    async with conn.transaction():
        await _lock(conn, schema)
        version = await version_of(conn, schema)
        if version == 0:
            raise StoreError(
                f"schema {schema} holds tables but no schema_version: "
                "it is not a cascade_notify store; refusing to touch it"
            )
        if version is not None and version > current_version():
            check_version(version, current_version(), f"schema {schema}")
        await _apply(conn, schema, version)
        return version or 0, current_version()


async def _lock(conn: Conn, schema: str) -> None:
    # two processes starting on an empty database must not both create the tables
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
        (f"cascade_notify schema {schema}",),
    )


async def _apply(conn: Conn, schema: str, found: int | None) -> None:
    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    for version, statements in MIGRATIONS:
        if version > (found or 0):
            for statement in statements:
                await conn.execute(statement)
    current = current_version()
    if found is None:
        await conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
        await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (current,))
    else:
        await conn.execute("UPDATE schema_version SET version = %s", (current,))
