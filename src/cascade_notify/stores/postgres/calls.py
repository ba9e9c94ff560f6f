"""The PostgreSQL store's hot calls, one round trip each: `claim`, `commit` and
`record_receipts` as single statements.

`commit` and `record_receipts` decide on the server (fence, merge receipts that
arrived meanwhile, take orphans): they are PL/pgSQL functions, created in each
pooled connection's own temporary schema (`pg_temp`) when the connection is
opened. They are not part of the stored schema, so they need no migration and
always match this code; a session without them (PgBouncer in transaction mode,
`prepared=false`) uses the statement-by-statement transactions of `_pg_rows`.

A call is one statement, so its transaction never waits on the client while
holding row locks (see the note on pipelines in `_pg_rows.load`).

Lock order is the module's (see `postgres`): advisory locks of message ids
first, in the order of their 64-bit hash, then delivery rows by id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cascade_notify.errors import StoreError
from cascade_notify.models import Attempt, Delivery, Receipt
from cascade_notify.stores import _history
from cascade_notify.stores import _outbox_sql as outbox
from cascade_notify.stores._codec import (
    ATTEMPT_COLUMNS,
    DELIVERY_COLUMNS,
    RECEIPT_COLUMNS,
    attempt_from_row,
    attempt_values,
    delivery_from_row,
    delivery_values,
    dumps,
    receipt_from_row,
    receipt_values,
    skipped_to_dict,
)
from cascade_notify.stores.base import Claim, ReceiptResult, Transition
from cascade_notify.stores.memory import ORPHAN_LIMIT, ORPHAN_TTL
from cascade_notify.stores.postgres import history
from cascade_notify.stores.postgres.rows import Conn, load

#: The channel a schema's news goes out on (see `PostgresStore.watch`), in SQL: the
#: schema is the first on the session's search_path.
_CHANNEL = "left('cn_due_' || current_schema(), 63)"


def channel(schema: str) -> str:
    """The channel a schema's news goes out on: `_CHANNEL`, spelled in Python."""
    return f"cn_due_{schema}"[:63]


#: The lock key of a message id: `_pg_rows._lock_key`, spelled in SQL.
_KEY = "hashtextextended('cascade_notify message ' || {p} || chr(31) || {m}, 0)"

_STATUS_AFTER = """
CREATE FUNCTION pg_temp.cn_status_after(status text, receipt text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN receipt = 'read' THEN 'read'
        WHEN receipt = 'delivered' THEN CASE WHEN status = 'read' THEN status ELSE 'delivered' END
        WHEN receipt = 'failed' THEN
            CASE WHEN status IN ('delivered', 'read') THEN status ELSE 'failed' END
        WHEN status IN ('sending', 'unknown') THEN 'accepted'
        ELSE status
    END
$$"""

_A = ", ".join(ATTEMPT_COLUMNS)
_R = ", ".join(RECEIPT_COLUMNS)
_R_FROM_JSON = ", ".join(
    f"({{x}}->>{i})::float8 AS {c}" if c in ("ts", "cost") else f"{{x}}->>{i} AS {c}"
    for i, c in enumerate(RECEIPT_COLUMNS)
)
_A_SET = ", ".join(
    "provider_message_id = coalesce(excluded.provider_message_id, attempts.provider_message_id)"
    if c == "provider_message_id"
    else f"{c} = excluded.{c}"
    for c in ATTEMPT_COLUMNS[1:]
)

# an attempt's ATTEMPT_COLUMNS as values, from its JSON array `{a}`
_A_VALUES = """
            {a}->>0, {a}->>1, ({a}->>2)::integer, {a}->>3, {a}->>4,
            {a}->>5, ({a}->>6)::float8, ({a}->>7)::float8, ({a}->>8)::float8,
            {a}->>9, {a}->>10, {a}->>11, ({a}->>12)::float8,
            ({a}->>13)::float8, ({a}->>14)::integer, {a}->>15, {a}->>16"""
# (an attempt's receipts follow its ATTEMPT_COLUMNS in its JSON array: {a}->17)

# whether a transition `{p}` moves its delivery's row (ends the lease, sets a status,
# skips a step); else only a changed step is written
_MOVES = "(({p}->>10)::boolean OR ({p}->>5)::boolean OR jsonb_array_length({p}->3) > 0)"
# the row's new values for transition `{p}`
_ROW_SET = """
        step = coalesce(({p}->>4)::integer, step),
        status = CASE WHEN ({p}->>5)::boolean THEN {p}->>6 ELSE status END,
        channel = CASE WHEN ({p}->>5)::boolean THEN {p}->>7 ELSE channel END,
        finished_ts = CASE WHEN ({p}->>5)::boolean THEN ({p}->>8)::float8 ELSE finished_ts END,
        wake_ts = CASE WHEN {moves} THEN ({p}->>9)::float8 ELSE wake_ts END,
        skipped = CASE WHEN jsonb_array_length({p}->3) > 0 THEN skipped || ({p}->3)
                  ELSE skipped END,
        lease_until = CASE WHEN ({p}->>10)::boolean THEN 0 ELSE lease_until END"""
# v_slow: of the fenced items, those written one by one by cn_write: an item naming an
# attempt twice, or with an attempt the store heard of meanwhile (receipts stored for it,
# orphans for its message id), whose status must be re-derived from what was heard
_SLOW = """SELECT coalesce(array_agg(DISTINCT n), '{}') INTO v_slow
    FROM jsonb_array_elements(p_items) WITH ORDINALITY e(i, n), jsonb_array_elements(i->2) x
    WHERE n = ANY (v_ok) AND (
        (SELECT count(*) FROM jsonb_array_elements(i->2) y WHERE y->>0 = x->>0) > 1
        OR (SELECT true FROM receipts r WHERE r.attempt_id = x->>0 LIMIT 1)
        OR (x->>9 IS NOT NULL AND (SELECT true FROM orphan_receipts o
            WHERE o.provider = x->>4 AND o.provider_message_id = x->>9 LIMIT 1)));"""

# One transition (see `_item`), its delivery row already locked and its token checked:
# p->2 holds the attempts, each an array of ATTEMPT_COLUMNS and then its receipts (each
# an array of RECEIPT_COLUMNS).
_WRITE_FUNCTION = f"""
CREATE FUNCTION pg_temp.cn_write(p jsonb) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    v_att record;
    v_r record;
    v_status text;
    v_known text[];
    v_new jsonb;
    v_attached boolean := false;
BEGIN
    -- each attempt written: the last copy of it in this write, with every receipt known
    FOR v_att IN
        -- (in the order the write first names them, so new attempts get their seq in
        -- the transition's order, not their ids')
        SELECT a, n, first FROM (
            SELECT DISTINCT ON (x->>0) x AS a, n, min(n) OVER (PARTITION BY x->>0) AS first
            FROM jsonb_array_elements((p->2)) WITH ORDINALITY e(x, n)
            ORDER BY x->>0, n DESC
        ) last ORDER BY first
    LOOP
        IF v_att.a->>9 IS NULL AND jsonb_array_length(v_att.a->17) = 0
           AND v_att.n = v_att.first THEN
            -- named once, no message id, no receipts: a new attempt (the intent before a
            -- call) has nothing stored to merge with and nothing to attach
            INSERT INTO attempts ({_A}) VALUES ({_A_VALUES.format(a="v_att.a")})
            ON CONFLICT (id) DO NOTHING;
            CONTINUE WHEN FOUND;
        END IF;
        v_status := v_att.a->>5;
        v_new := v_att.a->17;
        SELECT coalesce(array_agg(r->>6), '{{}}') INTO v_known FROM jsonb_array_elements(v_new) r;
        -- stored meanwhile: a receipt recorded while we held the lease
        FOR v_r IN
            SELECT receipt_id, status FROM receipts WHERE attempt_id = v_att.a->>0 ORDER BY seq
        LOOP
            IF NOT v_r.receipt_id = ANY (v_known) THEN
                v_status := pg_temp.cn_status_after(v_status, v_r.status);
                v_known := v_known || v_r.receipt_id;
            END IF;
        END LOOP;
        -- an earlier copy of the same attempt in this write
        FOR v_r IN
            SELECT r FROM jsonb_array_elements((p->2)) WITH ORDINALITY e(x, n),
                jsonb_array_elements(x->17) WITH ORDINALITY f(r, m)
            WHERE x->>0 = v_att.a->>0 AND n < v_att.n ORDER BY n, m
        LOOP
            IF NOT v_r.r->>6 = ANY (v_known) THEN
                v_status := pg_temp.cn_status_after(v_status, v_r.r->>2);
                v_known := v_known || (v_r.r->>6);
                v_new := v_new || jsonb_build_array(v_r.r);
            END IF;
        END LOOP;
        -- receipts that came before their message was known
        IF v_att.a->>9 IS NOT NULL THEN
            FOR v_r IN
                WITH gone AS (
                    DELETE FROM orphan_receipts
                    WHERE provider = v_att.a->>4 AND provider_message_id = v_att.a->>9
                    RETURNING seq, {_R}
                )
                SELECT * FROM gone ORDER BY seq
            LOOP
                IF NOT v_r.receipt_id = ANY (v_known) THEN
                    v_status := pg_temp.cn_status_after(v_status, v_r.status);
                    v_known := v_known || v_r.receipt_id;
                    v_attached := true;
                    v_new := v_new || jsonb_build_array(jsonb_build_array(
                        {", ".join("v_r." + c for c in RECEIPT_COLUMNS)}));
                END IF;
            END LOOP;
        END IF;
        INSERT INTO attempts ({_A}) VALUES (
            {_A_VALUES.format(a="v_att.a").replace("v_att.a->>5", "v_status")})
        ON CONFLICT (id) DO UPDATE SET {_A_SET};
        IF jsonb_array_length(v_new) > 0 THEN
            INSERT INTO receipts (attempt_id, {_R})
            SELECT v_att.a->>0, {_R_FROM_JSON.format(x="r")}
            FROM jsonb_array_elements(v_new) WITH ORDINALITY f(r, m) ORDER BY m
            ON CONFLICT (attempt_id, receipt_id) DO NOTHING;
        END IF;
    END LOOP;
    IF NOT ({_MOVES.format(p="p")} OR v_attached) THEN
        -- mid-transition, the lease kept: as in cn_commit
        UPDATE deliveries SET step = (p->>4)::integer
        WHERE id = p->>0 AND step <> (p->>4)::integer;
        RETURN;
    END IF;
    UPDATE deliveries SET {_ROW_SET.format(p="p", moves="true")},
        poked = poked OR v_attached
    WHERE id = p->>0;
END
$fn$"""  # noqa: S608 - constant columns

# p_items: transitions, each [delivery id, token, attempts, skipped, step, set status,
# status, channel, finished_ts, wake_ts, release, lessons (`history`), outbox
# events]. One transaction for them all; returns, in order, whether each was
# written (false: its lease is another's now, nothing written).
# The common writes go set-wise, a few statements for the whole group; a write the store
# learned something for meanwhile (see `_slow`) goes through cn_write alone. The planner
# is kept off sequential scans and hash joins: it guesses 100 rows for every
# jsonb_array_elements, and on a young table whose statistics are stale it would hash a
# scan of the whole table to find a few rows. Those guesses multiply across nested
# jsonb_array_elements past the cost where JIT compiles a statement (milliseconds, every
# time): JIT is off.
_COMMIT_FUNCTION = f"""
CREATE FUNCTION pg_temp.cn_commit(p_items jsonb) RETURNS boolean[] LANGUAGE plpgsql
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off
AS $fn$
DECLARE
    v_key bigint;
    v_n bigint;
    v_ok bigint[];
    v_slow bigint[];
    v_lessons jsonb;
BEGIN
    -- the message ids these writes make known (an orphan receipt for one waits for us),
    -- then the deliveries' rows: each in one order, as receipts take them
    FOR v_key IN
        SELECT DISTINCT {_KEY.format(p="(x->>4)", m="(x->>9)")}
        FROM jsonb_array_elements(p_items) i, jsonb_array_elements(i->2) x
        WHERE x->>9 IS NOT NULL ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(v_key);
    END LOOP;
    PERFORM FROM deliveries
    WHERE id = ANY (ARRAY(SELECT i->>0 FROM jsonb_array_elements(p_items) i))
    ORDER BY id FOR UPDATE;
    -- the fence: the items (by ordinal) whose lease still holds
    SELECT coalesce(array_agg(n), '{{}}') INTO v_ok
    FROM jsonb_array_elements(p_items) WITH ORDINALITY e(i, n)
    JOIN deliveries d ON d.id = i->>0 AND d.token = (i->>1)::bigint;
    {_SLOW}
    -- the recipients' history learns what the fenced writes teach (`history`)
    SELECT coalesce(jsonb_agg(l), '[]') INTO v_lessons
    FROM jsonb_array_elements(p_items) WITH ORDINALITY e(i, n), jsonb_array_elements(i->11) l
    WHERE n = ANY (v_ok);
    IF jsonb_array_length(v_lessons) > 0 THEN
        {history.TEACH.format(l="v_lessons")};
        {history.TRIM.format(l="v_lessons")};
    END IF;
    FOREACH v_n IN ARRAY v_slow LOOP
        PERFORM pg_temp.cn_write(p_items->(v_n::integer - 1));
    END LOOP;
    -- the outcome webhooks of the written ones, numbered on from each delivery's last
    -- (its row is locked above, as receipts lock it before adding theirs)
    INSERT INTO outbox (id, delivery_id, seq, kind, ts, data, next_ts)
    SELECT x->>0, i->>0,
        coalesce((SELECT max(o.seq) FROM outbox o WHERE o.delivery_id = i->>0), 0) + m,
        x->>1, (x->>2)::float8, x->3, (x->>2)::float8
    FROM jsonb_array_elements(p_items) WITH ORDINALITY e(i, n),
        jsonb_array_elements(coalesce(i->12, '[]')) WITH ORDINALITY f(x, m)
    WHERE n = ANY (v_ok)
    ORDER BY n, m;
    -- the rest: their attempts as written (in the order each write names them, so new
    -- attempts get their seq in the transition's order), their receipts, their rows
    INSERT INTO attempts ({_A})
    SELECT {_A_VALUES.format(a="x")}
    FROM jsonb_array_elements(p_items) WITH ORDINALITY e(i, n),
        jsonb_array_elements(i->2) WITH ORDINALITY f(x, m)
    WHERE n = ANY (v_ok) AND NOT n = ANY (v_slow)
    ORDER BY n, m
    ON CONFLICT (id) DO UPDATE SET {_A_SET};
    INSERT INTO receipts (attempt_id, {_R})
    SELECT x->>0, {_R_FROM_JSON.format(x="r")}
    FROM jsonb_array_elements(p_items) WITH ORDINALITY e(i, n),
        jsonb_array_elements(i->2) WITH ORDINALITY f(x, m),
        jsonb_array_elements(x->17) WITH ORDINALITY g(r, k)
    WHERE n = ANY (v_ok) AND NOT n = ANY (v_slow)
    ORDER BY n, m, k
    ON CONFLICT (attempt_id, receipt_id) DO NOTHING;
    -- mid-transition, the lease kept (the intent before a call), a row moves only if its
    -- step did: while the lease holds, the timer does not count (a lapsed lease makes the
    -- delivery due whatever it says)
    UPDATE deliveries d SET {_ROW_SET.format(p="i", moves=_MOVES.format(p="i"))}
    FROM jsonb_array_elements(p_items) WITH ORDINALITY e(i, n)
    WHERE d.id = i->>0 AND n = ANY (v_ok) AND NOT n = ANY (v_slow)
        AND ({_MOVES.format(p="i")} OR d.step <> (i->>4)::integer);
    RETURN ARRAY(SELECT n = ANY (v_ok) FROM generate_series(1, jsonb_array_length(p_items)) n);
END
$fn$"""  # noqa: S608 - constant columns

# p_receipts: a JSON array of receipts, each an array of RECEIPT_COLUMNS. One result row
# per receipt, in order: its delivery (NULL: kept as an orphan) and whether it was a
# duplicate.
_RECORD_FUNCTION = f"""
CREATE FUNCTION pg_temp.cn_record(
    p_receipts jsonb, p_now double precision, p_ttl double precision, p_limit bigint,
    p_events boolean
) RETURNS TABLE (r_delivery text, r_duplicate boolean) LANGUAGE plpgsql
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off
AS $fn$
DECLARE
    v_key bigint;
    v_r record;
    v_aid text;
    v_did text;
    v_pmid text;
    v_swept boolean := false;
    v_count bigint;
    v_after text;
    v_lesson jsonb;
BEGIN
    -- every message id's advisory lock (an orphan and the commit that makes its message
    -- known cannot miss each other), then the deliveries' rows, each in one order
    FOR v_key IN
        SELECT DISTINCT {_KEY.format(p="(x->>0)", m="(x->>1)")}
        FROM jsonb_array_elements(p_receipts) x ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(v_key);
    END LOOP;
    -- (each receipt's attempt looked up alone, through its index: joined with
    -- jsonb_array_elements, the planner would hash a sequential scan of a young table)
    PERFORM FROM deliveries d
    WHERE d.id = ANY (ARRAY(
        SELECT coalesce(
            (SELECT a.delivery_id FROM attempts a
             WHERE a.provider = x->>0 AND a.provider_message_id = x->>1
             ORDER BY a.seq LIMIT 1),
            (SELECT a.delivery_id FROM attempts a
             WHERE a.id = x->>7 AND a.provider = x->>0))
        FROM jsonb_array_elements(p_receipts) x))
    ORDER BY d.id FOR UPDATE;
    FOR v_r IN
        SELECT {_R_FROM_JSON.format(x="x")}, n
        FROM jsonb_array_elements(p_receipts) WITH ORDINALITY e(x, n) ORDER BY n
    LOOP
        -- (its delivery's row is locked above: the same lookups, and no commit can give
        -- this message id to another attempt while we hold its advisory lock)
        v_aid := NULL;
        SELECT a.id, a.delivery_id INTO v_aid, v_did
        FROM attempts a
        WHERE a.provider = v_r.provider AND a.provider_message_id = v_r.provider_message_id
        ORDER BY a.seq LIMIT 1;
        IF v_aid IS NULL AND v_r.echoed_attempt_id IS NOT NULL THEN
            -- the provider echoed our attempt id: an attempt that did not know its message
            -- id learns it here
            SELECT a.id, a.delivery_id, a.provider_message_id INTO v_aid, v_did, v_pmid
            FROM attempts a
            WHERE a.id = v_r.echoed_attempt_id AND a.provider = v_r.provider;
            IF v_aid IS NOT NULL AND v_pmid IS NULL THEN
                UPDATE attempts SET provider_message_id = v_r.provider_message_id
                WHERE id = v_aid;
            END IF;
        END IF;
        IF v_aid IS NULL THEN
            -- not known (yet): kept a while
            IF NOT v_swept THEN
                DELETE FROM orphan_receipts WHERE kept_ts <= p_now - p_ttl;
                v_swept := true;
            END IF;
            INSERT INTO orphan_receipts ({_R}, kept_ts)
            VALUES ({", ".join("v_r." + c for c in RECEIPT_COLUMNS)}, p_now)
            ON CONFLICT (provider, provider_message_id, receipt_id) DO NOTHING;
            r_delivery := NULL;
            r_duplicate := NOT FOUND;
            IF NOT r_duplicate THEN
                SELECT count(*) INTO v_count FROM orphan_receipts;
                IF v_count > p_limit THEN
                    DELETE FROM orphan_receipts WHERE seq IN (
                        SELECT seq FROM orphan_receipts ORDER BY seq LIMIT v_count - p_limit);
                END IF;
            END IF;
            RETURN NEXT;
            CONTINUE;
        END IF;
        INSERT INTO receipts (attempt_id, {_R})
        VALUES (v_aid, {", ".join("v_r." + c for c in RECEIPT_COLUMNS)})
        ON CONFLICT (attempt_id, receipt_id) DO NOTHING;
        r_delivery := v_did;
        r_duplicate := NOT FOUND;
        IF NOT r_duplicate THEN
            UPDATE attempts SET status = pg_temp.cn_status_after(status, v_r.status)
            WHERE id = v_aid RETURNING status INTO v_after;
            IF v_r.status <> 'sent' THEN
                SELECT jsonb_agg(jsonb_build_array(x.c0, x.c1, x.c2, x.c3, x.c4))
                INTO v_lesson FROM ({
    history.RECEIPT_LESSON.format(r="v_r", a="v_aid", d="v_did", after="v_after")
}) x;
                IF v_lesson IS NOT NULL THEN
                    {history.TEACH.format(l="v_lesson")};
                    {history.TRIM.format(l="v_lesson")};
                END IF;
            END IF;
            UPDATE deliveries SET poked = true
            WHERE id = v_did AND status = 'pending' AND NOT poked;
            IF p_events THEN  -- the `receipt` webhook (as `events.receipt_event` builds it)
                INSERT INTO outbox (id, delivery_id, seq, kind, ts, data, next_ts)
                SELECT 'evt_' || replace(gen_random_uuid()::text, '-', ''), v_did,
                    coalesce((SELECT max(o.seq) FROM outbox o WHERE o.delivery_id = v_did), 0)
                        + 1,
                    'receipt', v_r.ts,
                    jsonb_build_object('attempt_id', v_aid, 'provider', v_r.provider,
                        'provider_message_id', v_r.provider_message_id, 'status', v_r.status,
                        'code', v_r.code, 'error', v_r.error, 'cost', v_r.cost),
                    v_r.ts;
            END IF;
            -- the workers listening are told (once, at commit)
            PERFORM pg_notify({_CHANNEL}, '');
        END IF;
        RETURN NEXT;
    END LOOP;
END
$fn$"""  # noqa: S608 - constant columns

#: What each pooled connection runs once, when it is opened.
SESSION_FUNCTIONS = (_STATUS_AFTER, _WRITE_FUNCTION, _COMMIT_FUNCTION, _RECORD_FUNCTION)

_D = ", ".join(
    f"c.{c}::text" if c == "steps" else f"c.{c}" for c in DELIVERY_COLUMNS
)  # steps as text: one policy's text decodes once (see `_codec.steps_from_json`)


def _due_rank(rank: int, before: str) -> str:
    return f"""
        SELECT id, {rank} AS rank, due_ts FROM deliveries
        WHERE status IN ('pending', 'scheduled') AND priority = {rank}
            AND due_ts <= %(now)s::float8
        ORDER BY due_ts
        LIMIT %(limit)s::integer{before}
        FOR UPDATE SKIP LOCKED"""  # noqa: S608 - constant text


#: The deliveries a claim leases, as CTEs ending in `due`: each priority's due rows
#: (a scheduled one's start among them) from its own range of one index, highest
#: first, each taking what the higher ones left of the limit.
DUE = f"""
    WITH due_0 AS ({_due_rank(0, "")}
    ), due_1 AS ({_due_rank(1, " - (SELECT count(*) FROM due_0)")}
    ), due_2 AS ({_due_rank(2, " - (SELECT count(*) FROM due_0) - (SELECT count(*) FROM due_1)")}
    ), due AS (
        SELECT * FROM due_0 UNION ALL SELECT * FROM due_1 UNION ALL SELECT * FROM due_2
    )"""  # noqa: S608 - constant text
CLAIM = f"""{DUE}, c AS (
        UPDATE deliveries d SET token = d.token + 1, lease_until = %(until)s::float8,
            poked = false, status = 'pending'
        FROM due WHERE d.id = due.id
        RETURNING d.*, due.rank AS due_rank, due.due_ts AS due_was
    )
    SELECT c.token, {_D},
        (SELECT json_agg(json_build_array({", ".join("a." + c for c in ATTEMPT_COLUMNS)},
                -- each attempt's receipts by its own index lookup (a join would hash a
                -- sequential scan of receipts on a young table, once per delivery)
                (SELECT json_agg(json_build_array({", ".join("r." + c for c in RECEIPT_COLUMNS)})
                                 ORDER BY r.seq)
                 FROM receipts r WHERE r.attempt_id = a.id))
            ORDER BY a.seq)
         FROM attempts a WHERE a.delivery_id = c.id)
    FROM c ORDER BY c.due_rank, c.due_was
"""  # noqa: S608 - constant columns
#: The `deliveries` columns of type jsonb (sent as JSON text).
JSONB_COLUMNS = frozenset({"recipient", "message", "steps", "skipped", "unusable"})
_FLOAT = ("created_ts", "expires_ts", "finished_ts", "wake_ts")
# new deliveries, a JSON array of DELIVERY_COLUMNS each (the JSON columns as text), made
# due at once; the ids of those made (the others' idempotency keys were taken)
# (and the workers listening are told, once per statement: notifications of one
# transaction with one channel and payload are folded into one)
CREATE = f"""
    WITH made AS (
    INSERT INTO deliveries ({", ".join(DELIVERY_COLUMNS)}, poked)
    SELECT {
    ", ".join(
        f"(x->>{i})::jsonb"
        if c in JSONB_COLUMNS
        else f"(x->>{i})::float8"
        if c in _FLOAT
        else f"(x->>{i})::integer"
        if c in ("step", "priority")
        else f"x->>{i}"
        for i, c in enumerate(DELIVERY_COLUMNS)
    )
}, (x->>2) = 'pending'
    FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY e(x, n)
    ORDER BY n
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id
    )
    SELECT id, pg_notify({_CHANNEL}, '') FROM made
"""  # noqa: S608 - constant columns
#: Move a scheduled delivery's start, and its expiry by as much.
RESCHEDULE = (
    "UPDATE deliveries SET expires_ts = expires_ts + (%(start)s::float8 - wake_ts), "
    "wake_ts = %(start)s::float8 WHERE id = %(id)s AND status = 'scheduled'"
)
_COMMIT = "SELECT pg_temp.cn_commit(%s::jsonb)"
_RECORD = (
    "SELECT r_delivery, r_duplicate "
    "FROM pg_temp.cn_record(%s::jsonb, %s::float8, %s::float8, %s::bigint, %s::boolean)"
)


def delivery_json(delivery: Delivery) -> str:
    """A new delivery as `create` takes it (a StoreError here is the caller's alone)."""
    return dumps(delivery_values(delivery))


async def create(conn: Conn, news: Sequence[tuple[Delivery, str]]) -> list[tuple[Delivery, bool]]:
    """Insert new deliveries (without attempts; each with its `delivery_json`) in one
    statement; for each, the delivery and True, or, where its idempotency key was taken,
    the one that holds it and False."""
    cur = await conn.execute(CREATE, (f"[{','.join(text for _, text in news)}]",))
    made = {row[0] for row in await cur.fetchall()}
    deliveries = [delivery for delivery, _ in news]
    taken = [d.idempotency_key for d in deliveries if d.id not in made]
    holders: dict[str | None, Delivery] = {}
    if taken:
        cur = await conn.execute(
            "SELECT id FROM deliveries WHERE idempotency_key = ANY (%s)", (taken,)
        )
        found = await load(conn, [row[0] for row in await cur.fetchall()])
        holders = {d.idempotency_key: d for d in found.values()}
    answers: list[tuple[Delivery, bool]] = []
    for delivery in deliveries:
        if delivery.id in made:
            answers.append((delivery.copy(), True))
        elif delivery.idempotency_key in holders:
            answers.append((holders[delivery.idempotency_key].copy(), False))
        else:  # pragma: no cover - the key's owner was deleted in between
            raise StoreError("the delivery with this idempotency key just vanished; retry")
    return answers


async def claim(conn: Conn, now: float, limit: int, until: float) -> list[Claim]:
    """Lease up to `limit` due deliveries and read them whole, in one statement."""
    cur = await conn.execute(CLAIM, {"now": now, "limit": limit, "until": until})
    claims: list[Claim] = []
    for row in await cur.fetchall():
        attempts = [
            attempt_from_row(a, [receipt_from_row(r) for r in a[-1] or ()]) for a in row[-1] or ()
        ]
        claims.append(Claim(delivery_from_row(row[1:-1], attempts), int(row[0]), until))
    return claims


def _attempt_json(attempt: Attempt) -> list[Any]:
    """`attempt` as the functions read it: ATTEMPT_COLUMNS, then its receipts."""
    return [*attempt_values(attempt), [_receipt_json(r) for r in attempt.receipts]]


def _receipt_json(receipt: Receipt) -> list[Any]:
    return list(receipt_values(receipt))


def _item(claim: Claim, transition: Transition) -> list[Any]:
    status = transition.status
    return [
        claim.delivery.id,
        claim.token,
        [_attempt_json(a) for a in transition.attempts],
        [skipped_to_dict(s) for s in transition.skipped],
        transition.step,
        status is not None,
        None if status is None else status.value,
        transition.channel,
        transition.finished_ts,
        transition.wake_ts,
        transition.release,
        history.lessons_json(_history.from_transition(claim.delivery, transition))
        if claim.delivery.order is not None
        else [],
        outbox.pg_events(transition.events),
    ]


def write_json(claim: Claim, transition: Transition) -> str:
    """A transition as `commit` takes it (a StoreError here is the caller's alone)."""
    return dumps(_item(claim, transition))


async def commit(conn: Conn, writes: Sequence[str]) -> list[bool]:
    """Write transitions (each its `write_json`), each fenced by its claim's token, in one
    statement (one transaction); whether each was written (false: nothing of it, its
    lease is lost)."""
    cur = await conn.execute(_COMMIT, (f"[{','.join(writes)}]",))
    row = await cur.fetchone()
    if row is None or len(row[0]) != len(writes):  # pragma: no cover - one answer each
        raise StoreError("PostgreSQL did not answer for every write of a commit")
    return [bool(done) for done in row[0]]


async def record(
    conn: Conn, receipts: Sequence[Receipt], now: float, events: bool = False
) -> list[ReceiptResult]:
    """Record a batch of receipts in one statement (one transaction); with `events`, add
    the `receipt` webhook of each new one to the outbox."""
    payload = dumps([_receipt_json(r) for r in receipts])
    cur = await conn.execute(_RECORD, (payload, now, ORPHAN_TTL, ORPHAN_LIMIT, events))
    found = await cur.fetchall()
    if len(found) != len(receipts):  # pragma: no cover - the function answers each one
        raise StoreError(f"PostgreSQL answered {len(found)} of {len(receipts)} receipts")
    return [ReceiptResult(r, row[0], bool(row[1])) for r, row in zip(receipts, found, strict=True)]
