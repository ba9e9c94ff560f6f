"""The SQLite schema, as numbered migrations.

A migration is a list of statements run in one transaction with the bump of
`schema_version`; a database is only ever migrated forward. Version 1 is
the whole first schema. Timestamps are POSIX seconds (REAL) written from the
injected clock, never `CURRENT_TIMESTAMP`, so lease expiry is testable on a
fake clock.
"""

from __future__ import annotations

import sqlite3

from cascade_notify.errors import StoreError
from cascade_notify.stores._common import check_version

#: (version, statements): applied in order to reach each version.
MIGRATIONS: list[tuple[int, tuple[str, ...]]] = [
    (
        1,
        (
            """CREATE TABLE deliveries (
            id TEXT PRIMARY KEY,
            policy TEXT NOT NULL,
            status TEXT NOT NULL,
            step INTEGER NOT NULL,
            channel TEXT,
            created_ts REAL NOT NULL,
            expires_ts REAL NOT NULL,
            finished_ts REAL,
            wake_ts REAL,
            lease_until REAL NOT NULL DEFAULT 0,  -- 0: not leased
            token INTEGER NOT NULL DEFAULT 0,     -- the fence: bumped by claim and cancel
            poked INTEGER NOT NULL DEFAULT 0,     -- a receipt (or creation) wants a look now
            idempotency_key TEXT UNIQUE,
            recipient TEXT NOT NULL,
            message TEXT NOT NULL,
            steps TEXT NOT NULL,
            skipped TEXT NOT NULL DEFAULT '[]'
        )""",
            # the three ways a delivery becomes due, one partial index each
            """CREATE INDEX deliveries_poked ON deliveries (lease_until)
            WHERE status = 'pending' AND poked = 1""",
            "CREATE INDEX deliveries_wake ON deliveries (wake_ts) WHERE status = 'pending'",
            """CREATE INDEX deliveries_leased ON deliveries (lease_until)
            WHERE status = 'pending' AND lease_until > 0""",
            "CREATE INDEX deliveries_finished ON deliveries (finished_ts) "
            "WHERE status <> 'pending'",
            """CREATE TABLE attempts (
            seq INTEGER PRIMARY KEY,  -- the order attempts were made in
            id TEXT NOT NULL UNIQUE,
            delivery_id TEXT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
            step INTEGER NOT NULL,
            channel TEXT NOT NULL,
            provider TEXT NOT NULL,
            status TEXT NOT NULL,
            started_ts REAL NOT NULL,
            finished_ts REAL,
            deadline_ts REAL,
            provider_message_id TEXT,
            error TEXT,
            code TEXT,
            retry_ts REAL,
            cost REAL
        )""",
            "CREATE INDEX attempts_delivery ON attempts (delivery_id, seq)",
            """CREATE INDEX attempts_message ON attempts (provider, provider_message_id)
            WHERE provider_message_id IS NOT NULL""",
            """CREATE TABLE receipts (
            seq INTEGER PRIMARY KEY,  -- the order receipts were heard in
            attempt_id TEXT NOT NULL REFERENCES attempts (id) ON DELETE CASCADE,
            provider TEXT NOT NULL,
            provider_message_id TEXT NOT NULL,
            status TEXT NOT NULL,
            ts REAL NOT NULL,
            code TEXT,
            error TEXT,
            receipt_id TEXT NOT NULL,
            echoed_attempt_id TEXT,
            UNIQUE (attempt_id, receipt_id)
        )""",
            """CREATE TABLE orphan_receipts (
            seq INTEGER PRIMARY KEY,
            provider TEXT NOT NULL,
            provider_message_id TEXT NOT NULL,
            status TEXT NOT NULL,
            ts REAL NOT NULL,
            code TEXT,
            error TEXT,
            receipt_id TEXT NOT NULL,
            echoed_attempt_id TEXT,
            kept_ts REAL NOT NULL,
            UNIQUE (provider, provider_message_id, receipt_id)
        )""",
            "CREATE INDEX orphan_receipts_kept ON orphan_receipts (kept_ts)",
        ),
    ),
    (
        2,
        (
            # Delivery.unusable: the channels known unusable when it was made (JSON, written
            # once by create, read back whole)
            "ALTER TABLE deliveries ADD COLUMN unusable TEXT NOT NULL DEFAULT '{}'",
        ),
    ),
    (
        3,
        (
            # the address book (AddressBook): what providers learned about addresses
            """CREATE TABLE addresses (
            channel TEXT NOT NULL,
            address TEXT NOT NULL,
            state TEXT NOT NULL,  -- 'gone': unusable; 'linked': recipient_id's address
            reason TEXT NOT NULL,
            provider TEXT NOT NULL,
            ts REAL NOT NULL,     -- of the signal that set this state
            recipient_id TEXT,
            PRIMARY KEY (channel, address)
        ) WITHOUT ROWID""",
            "CREATE INDEX addresses_recipient ON addresses (recipient_id, channel) "
            "WHERE recipient_id IS NOT NULL",
        ),
    ),
    (
        4,
        (
            # Delivery.fingerprint: a hash of what an idempotency key was first sent with,
            # so its reuse for another message is refused (NULL on older rows: unchecked)
            "ALTER TABLE deliveries ADD COLUMN fingerprint TEXT",
        ),
    ),
    (
        5,
        (
            # link tokens that linked (a digest each): a replayed deep link links nothing
            "CREATE TABLE link_tokens (key TEXT PRIMARY KEY, ts REAL NOT NULL) WITHOUT ROWID",
            "CREATE INDEX link_tokens_ts ON link_tokens (ts)",
        ),
    ),
    (
        6,
        (
            # what the guards of every process on the file share: rate-limit slots,
            # brake counts, breaker states (`SharedState`)
            "CREATE TABLE shared_numbers (key TEXT PRIMARY KEY, value REAL NOT NULL, "
            "expires_ts REAL NOT NULL) WITHOUT ROWID",
            "CREATE TABLE shared_texts (key TEXT PRIMARY KEY, version INTEGER NOT NULL, "
            "text TEXT NOT NULL, expires_ts REAL NOT NULL) WITHOUT ROWID",
        ),
    ),
    (
        7,
        (
            # the call queue (CallQueue): call tasks for people, `type: call_queue`
            """CREATE TABLE calls (
            task_id TEXT PRIMARY KEY,
            provider TEXT NOT NULL,
            delivery_id TEXT NOT NULL,
            recipient_id TEXT NOT NULL,
            phone TEXT NOT NULL,
            text TEXT NOT NULL,
            summary TEXT NOT NULL,
            not_before REAL NOT NULL,
            due_by REAL NOT NULL,
            created_ts REAL NOT NULL,
            task TEXT NOT NULL,   -- the task as call_webhook posts it (JSON)
            status TEXT NOT NULL, -- open, claimed, done, no_answer, wrong_number, cancelled
            operator TEXT,
            claimed_ts REAL,
            finished_ts REAL,
            note TEXT
        ) WITHOUT ROWID""",
            "CREATE INDEX calls_open ON calls (due_by) WHERE status IN ('open', 'claimed')",
        ),
    ),
    (
        8,
        (
            # priorities (Priority.rank: 0 high, 1 normal, 2 bulk) and scheduled sends
            # (status 'scheduled', due at wake_ts): a claim reads each priority's due rows
            # through its own range of these indexes, highest first
            "ALTER TABLE deliveries ADD COLUMN priority INTEGER NOT NULL DEFAULT 1",
            "DROP INDEX deliveries_poked",
            """CREATE INDEX deliveries_poked_by_priority ON deliveries (priority, lease_until)
            WHERE status = 'pending' AND poked = 1""",
            "DROP INDEX deliveries_wake",
            """CREATE INDEX deliveries_wake_by_priority ON deliveries (priority, wake_ts)
            WHERE status IN ('pending', 'scheduled')""",
        ),
    ),
    (
        9,
        (
            # the read-only views (`cascade-notify deliveries`, `stats`): the deliveries
            # of a time window, and a recipient's newest first (the expression is the
            # one `stores._observe.SQLITE.recipient_id` queries by)
            # covering: `stats` reads these columns only, never the wide rows (recipient,
            # message, steps), so a month of deliveries is a scan of a narrow index
            "CREATE INDEX deliveries_created ON deliveries "
            "(created_ts, id, status, policy, channel, finished_ts, skipped)",
            "CREATE INDEX deliveries_recipient ON deliveries "
            "(json_extract(recipient, '$.id'), created_ts)",
            # covering, for the attempts of each delivery `stats` reads
            "CREATE INDEX attempts_views ON attempts "
            "(delivery_id, seq, step, channel, provider, status, cost)",
        ),
    ),
    (
        10,
        (
            # Attempt.segments, .encoding and .currency: what an SMS was billed as, and the
            # price a receipt reported (nullable, no default: no table rewrite)
            "ALTER TABLE attempts ADD COLUMN segments INTEGER",
            "ALTER TABLE attempts ADD COLUMN encoding TEXT",
            "ALTER TABLE attempts ADD COLUMN currency TEXT",
            # Receipt.cost: the price a gateway reported with a status
            "ALTER TABLE receipts ADD COLUMN cost REAL",
            "ALTER TABLE orphan_receipts ADD COLUMN cost REAL",
        ),
    ),
    (
        11,
        (
            # the support page's search (`DeliveryQuery.phone`, `.email`): a recipient's
            # deliveries by a phone number on any phone channel, or by e-mail in any case;
            # partial, so rows without the field cost nothing (the expressions are the
            # ones `stores._observe.SQLITE.field` queries by)
            *(
                f"CREATE INDEX deliveries_{name} ON deliveries "
                f"(json_extract(recipient, '$.{name}'), created_ts) "
                f"WHERE json_extract(recipient, '$.{name}') IS NOT NULL"
                for name in ("whatsapp", "sms", "call")
            ),
            "CREATE INDEX deliveries_email ON deliveries "
            "(lower(json_extract(recipient, '$.email')), created_ts) "
            "WHERE lower(json_extract(recipient, '$.email')) IS NOT NULL",
        ),
    ),
    (
        12,
        (
            # the learned order's history (`Learning`): per recipient and channel, the rank
            # of its best success (a read counts later), when it last reached them and
            # when it last failed them; read whole per recipient at each send
            """CREATE TABLE channel_history (
            recipient_id TEXT NOT NULL,
            channel TEXT NOT NULL,
            rank REAL,
            reached_ts REAL,
            failed_ts REAL,
            PRIMARY KEY (recipient_id, channel)
        ) WITHOUT ROWID""",
        ),
    ),
    (
        13,
        (
            # outcome webhooks (`events:`), written with the change they tell of; `seq`
            # numbers a delivery's in order; a sent one is kept until its delivery is purged
            """CREATE TABLE outbox (
            id TEXT PRIMARY KEY,  -- the webhook-id
            delivery_id TEXT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            kind TEXT NOT NULL,
            ts REAL NOT NULL,
            data TEXT NOT NULL,
            sent_ts REAL,
            next_ts REAL NOT NULL,             -- not tried again before this
            lease_until REAL NOT NULL DEFAULT 0,
            token INTEGER NOT NULL DEFAULT 0,  -- the fence: bumped by each lease
            tries INTEGER NOT NULL DEFAULT 0,
            UNIQUE (delivery_id, seq)
        )""",
            # the sender's: unsent events by due time, and each delivery's unsent head
            "CREATE INDEX outbox_due ON outbox (next_ts) WHERE sent_ts IS NULL",
            "CREATE INDEX outbox_unsent ON outbox (delivery_id, seq) WHERE sent_ts IS NULL",
        ),
    ),
]


def current_version() -> int:
    """The schema version this code reads and writes."""
    return MIGRATIONS[-1][0]


def found_version(conn: sqlite3.Connection) -> int | None:
    """The schema version, 0 for a database with foreign tables only, None if empty."""
    tables = {
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }
    if "schema_version" in tables:
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        return 0 if row is None else int(row[0])
    return 0 if tables else None


def check_or_create(conn: sqlite3.Connection, *, where: str) -> None:
    """Create the schema in an empty database; refuse a foreign, older or newer one."""
    version = found_version(conn)
    if version is None:
        migrate(conn, where=where)
    elif version == 0:
        raise StoreError(
            f"{where} holds tables but no cascade_notify schema_version: "
            "it is not a cascade_notify store"
        )
    else:
        check_version(version, current_version(), where)


def migrate(conn: sqlite3.Connection, *, where: str) -> tuple[int, int]:
    """Apply the migrations this database lacks; return (version before, version after)."""
    found = found_version(conn)
    if found == 0:
        raise StoreError(
            f"{where} holds tables but no cascade_notify schema_version: "
            "it is not a cascade_notify store; refusing to touch it"
        )
    before = found or 0
    if before > current_version():
        check_version(before, current_version(), where)
    for version, statements in MIGRATIONS:
        if version > before:
            for statement in statements:
                conn.execute(statement)
    after = current_version()
    if found is None:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (after,))
    else:
        conn.execute("UPDATE schema_version SET version = ?", (after,))
    return before, after
