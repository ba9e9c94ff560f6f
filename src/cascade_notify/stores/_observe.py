# ruff: noqa: S608 - the SQL is built from this module's constants; every value is a parameter
"""The read-only queries of `cascade-notify deliveries` and `stats`, in the SQL both
stores speak, with what differs per dialect in `Dialect`.

Statistics are three aggregate queries over the deliveries created in the window,
each `GROUP BY` the dimensions asked for (so the database returns one row per group,
never one per delivery):

- `attempts`: sent, delivered, read, failed, spent per group of attempts;
- `skipped`: the skipped steps (a JSON array per delivery) per group and reason;
- `won`: the delivered deliveries per group of their winning attempt, with their
  rescues and the median and 95th percentile of their time to delivery
  (PostgreSQL: `percentile_cont`; SQLite: window functions rank each group's times
  and only the rows at the two ranks each percentile reads come back).

Money: `SPENT` below is the one expression that sums the attempts' `cost` column.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cascade_notify.models import DeliveryStatus
from cascade_notify.observe.compute import PHONE_FIELDS, Rows, page_of
from cascade_notify.observe.types import (
    FAILED,
    MAX_FAILURE_ROWS,
    PERCENTILES,
    REACHED,
    WINNING,
    DeliveryPage,
    DeliveryQuery,
    DeliverySummary,
    Dimension,
    FailureRow,
    Key,
    day_key,
    interpolate,
)

#: What an attempt group spent: the sum of its attempts' costs (NULL: none had one).
#: With a currency column, add `a.currency` to `attempts()`' SELECT and GROUP BY.
SPENT = "sum(a.cost)"


@dataclass(frozen=True, slots=True)
class Dialect:
    param: str  # the driver's placeholder
    day: str  # day number of a POSIX time `{}`
    recipient_id: str  # the recipient's id in a `deliveries` row (as its index reads it)
    field: str  # a recipient field `{}` (whatsapp, sms, call, email), as its index reads it
    skipped_from: str  # the skipped steps of `d`, one row `s` each
    skip_channel: str
    skip_step: str
    skip_reason: str
    no_skips: str  # `d` skipped nothing
    percentiles_in_sql: bool


SQLITE = Dialect(
    param="?",
    day="CAST({} / 86400 AS INTEGER)",
    recipient_id="json_extract(recipient, '$.id')",
    field="json_extract(recipient, '$.{}')",
    skipped_from="json_each(d.skipped) s",
    skip_channel="json_extract(s.value, '$.channel')",
    skip_step="json_extract(s.value, '$.step')",
    skip_reason="json_extract(s.value, '$.reason')",
    no_skips="d.skipped = '[]'",
    percentiles_in_sql=False,
)
POSTGRES = Dialect(
    param="%s",
    day="floor({} / 86400)::bigint",
    recipient_id="(recipient->>'id')",
    field="(recipient->>'{}')",
    skipped_from="jsonb_array_elements(d.skipped) s(value)",
    skip_channel="(s.value->>'channel')",
    skip_step="(s.value->>'step')::integer",
    skip_reason="(s.value->>'reason')",
    no_skips="d.skipped = '[]'::jsonb",
    percentiles_in_sql=True,
)


def _in(values: Iterable[str]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


def _count(condition: str) -> str:
    return f"count(CASE WHEN {condition} THEN 1 END)"


_READ = _count("a.status = 'read'")
_WINDOW = "d.created_ts >= {p} AND d.created_ts < {p}"


def _dims(
    by: Sequence[Dimension],
    dialect: Dialect,
    *,
    channel: str,
    step: str,
    provider: str = "a.provider",
) -> list[str]:
    """The SQL of each dimension, attempts being `a` (or skipped steps, or winners, by
    `channel`, `step` and `provider`), deliveries `d`."""
    exprs = {
        "channel": channel,
        "provider": provider,
        "step": step,
        "policy": "d.policy",
        "day": dialect.day.format("d.created_ts"),
    }
    return [exprs[name] for name in by]


def _select(dims: list[str]) -> str:
    return "".join(f"{e} AS k{i}, " for i, e in enumerate(dims))


def _group(dims: list[str]) -> str:
    return f" GROUP BY {', '.join(f'k{i}' for i in range(len(dims)))}" if dims else ""


def attempts_sql(by: Sequence[Dimension], dialect: Dialect) -> str:
    dims = _dims(by, dialect, channel="a.channel", step="a.step")
    return (
        f"SELECT {_select(dims)}count(*), {_count(f'a.status IN {_in(REACHED)}')}, "
        f"{_READ}, {_count(f'a.status IN {_in(FAILED)}')}, {SPENT} "
        "FROM deliveries d JOIN attempts a ON a.delivery_id = d.id "
        f"WHERE {_WINDOW.format(p=dialect.param)}{_group(dims)}"
    )


def skipped_sql(by: Sequence[Dimension], dialect: Dialect) -> str | None:
    """None when `by` has `provider`: a skipped step has no provider."""
    if "provider" in by:
        return None
    dims = _dims(by, dialect, channel=dialect.skip_channel, step=dialect.skip_step)
    dims_and_reason = [*dims, dialect.skip_reason]
    return (
        f"SELECT {_select(dims_and_reason)}count(*) "
        f"FROM deliveries d, {dialect.skipped_from} "
        f"WHERE {_WINDOW.format(p=dialect.param)} AND NOT ({dialect.no_skips})"
        f"{_group(dims_and_reason)}"
    )


def won_sql(by: Sequence[Dimension], dialect: Dialect) -> str:
    # the winner is on the channel the delivery was delivered on (`d.channel`): its step,
    # and its provider when grouped by it, are looked up in the covering attempt index,
    # never in the attempts' rows
    dims = _dims(by, dialect, channel="d.channel", step="d.win_step", provider="d.win_provider")
    keys = [f"k{i}" for i in range(len(dims))]
    winner = (
        "(SELECT x.{} FROM attempts x WHERE x.delivery_id = d.id AND x.channel = d.channel "
        f"AND x.status IN {_in(WINNING)} ORDER BY x.seq DESC LIMIT 1)"
    )
    provider = winner.format("provider") if "provider" in by else "NULL"
    delivered = (
        f"d.status = '{DeliveryStatus.DELIVERED.value}' AND d.finished_ts IS NOT NULL "
        f"AND {_WINDOW.format(p=dialect.param)}"
    )
    if dialect.percentiles_in_sql:
        # PostgreSQL: one grouped join (hash join, parallel) instead of subqueries per row
        won = f"a.channel = d.channel AND a.status IN {_in(WINNING)}"
        last = "(array_agg(a.{} ORDER BY a.seq DESC) FILTER (WHERE " + won + "))[1]"
        provider = last.format("provider") if "provider" in by else "NULL"
        w = (
            "SELECT d.id, d.policy, d.created_ts, d.channel, "
            f"d.finished_ts - d.created_ts AS took, {last.format('step')} AS win_step, "
            f"{provider} AS win_provider, min(a.step) AS first_step "
            f"FROM deliveries d JOIN attempts a ON a.delivery_id = d.id WHERE {delivered} "
            "GROUP BY d.id"
        )
    else:
        w = (
            "SELECT d.id, d.policy, d.created_ts, d.channel, "
            f"d.finished_ts - d.created_ts AS took, {winner.format('step')} AS win_step, "
            f"{provider} AS win_provider, "
            "(SELECT min(x.step) FROM attempts x WHERE x.delivery_id = d.id) AS first_step "
            f"FROM deliveries d WHERE {delivered}"
        )
    winners = (
        f"WITH w AS MATERIALIZED ({w}), "
        f"g AS (SELECT {_select(dims)}d.took AS took, "
        "CASE WHEN d.win_step > d.first_step THEN 1 ELSE 0 END AS rescue "
        "FROM w d WHERE d.win_step IS NOT NULL) "
    )
    group = f" GROUP BY {', '.join(keys)}" if keys else ""
    if dialect.percentiles_in_sql:
        wanted = ", ".join(
            f"percentile_cont({p}) WITHIN GROUP (ORDER BY took)" for p in PERCENTILES
        )
        head = "".join(k + ", " for k in keys)
        return f"{winners}SELECT {head}count(*), sum(rescue), {wanted} FROM g{group}"
    partition = f"PARTITION BY {', '.join(keys)}" if keys else ""
    picks = " OR ".join(
        f"rn = CAST({p} * (n - 1) AS INTEGER) + {step}" for p in PERCENTILES for step in (1, 2)
    )
    # one window, so one sort: the whole partition for the counts, ranks by time
    whole = f"({partition} ORDER BY took ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)"
    return (
        f"{winners}, r AS (SELECT g.*, row_number() OVER {whole} AS rn, "
        f"count(*) OVER {whole} AS n, sum(rescue) OVER {whole} AS rescues FROM g) "
        f"SELECT {''.join(k + ', ' for k in keys)}n, rescues, rn, took FROM r WHERE {picks}"
    )


def failures_sql(dialect: Dialect) -> str:
    """Failed attempts by channel, provider, status and code, most frequent first; `max`
    picks one error text of each (the same one every store picks). A failure a receipt
    reported carries its code and text on the receipt: the attempt's own (an error at
    send) come first, then the latest failed receipt's."""
    latest = (
        "(SELECT r.{} FROM receipts r WHERE r.attempt_id = a.id AND r.status = 'failed' "
        "ORDER BY r.seq DESC LIMIT 1)"
    )
    failed = (
        f"SELECT a.channel, a.provider, a.status, coalesce(a.code, {latest.format('code')}, '') "
        f"AS code, coalesce(a.error, {latest.format('error')}) AS error "
        "FROM deliveries d JOIN attempts a ON a.delivery_id = d.id "
        f"WHERE {_WINDOW.format(p=dialect.param)} AND a.status IN {_in(FAILED)}"
    )
    return (
        f"SELECT channel, provider, status, code, count(*), max(error) FROM ({failed}) f "
        "GROUP BY channel, provider, status, code "
        f"ORDER BY count(*) DESC, 1, 2, 3, 4 LIMIT {MAX_FAILURE_ROWS}"
    )


def failures_from_rows(found: Iterable[Sequence[Any]]) -> list[FailureRow]:
    return [
        FailureRow(channel=str(r[0]), provider=str(r[1]), status=str(r[2]), code=str(r[3]),
                   count=int(r[4]), example=None if r[5] is None else str(r[5]))
        for r in found
    ]  # fmt: skip


def outcomes_sql(dialect: Dialect) -> str:
    return (
        "SELECT d.status, count(*) FROM deliveries d "
        f"WHERE {_WINDOW.format(p=dialect.param)} GROUP BY d.status"
    )


def key_of(by: Sequence[Dimension], row: Sequence[Any]) -> Key:
    parts: list[str | int] = []
    for name, value in zip(by, row, strict=False):
        if name == "day":
            parts.append(day_key(int(value)))
        elif name == "step":
            parts.append(int(value))
        else:
            parts.append(str(value))
    return tuple(parts)


def add_attempts(rows: Rows, by: Sequence[Dimension], found: Iterable[Sequence[Any]]) -> None:
    width = len(by)
    for row in found:
        sent = int(row[width])
        if sent:
            spent = row[width + 4]
            rows.attempts(
                key_of(by, row),
                sent,
                int(row[width + 1]),
                int(row[width + 2]),
                int(row[width + 3]),
                None if spent is None else float(spent),
            )


def add_skipped(rows: Rows, by: Sequence[Dimension], found: Iterable[Sequence[Any]]) -> None:
    width = len(by)
    for row in found:
        rows.skipped(key_of(by, row), str(row[width]), int(row[width + 1]))


def add_won(
    rows: Rows, by: Sequence[Dimension], found: Iterable[Sequence[Any]], dialect: Dialect
) -> None:
    width = len(by)
    if dialect.percentiles_in_sql:
        for row in found:
            if int(row[width]):
                median, p95 = (float(v) for v in row[width + 2 : width + 4])
                rows.won(key_of(by, row), int(row[width]), int(row[width + 1]), median, p95)
        return
    groups: dict[Key, tuple[int, int, dict[int, float]]] = {}
    for row in found:
        key = key_of(by, row)
        n, rescues, rank, took = (
            int(row[width]),
            int(row[width + 1]),
            int(row[width + 2]),
            row[3 + width],
        )
        groups.setdefault(key, (n, rescues, {}))[2][rank] = float(took)
    for key, (n, rescues, by_rank) in groups.items():
        median, p95 = (interpolate(by_rank, n, p) for p in PERCENTILES)
        rows.won(key, n, rescues, median, p95)


#: How many deliveries are not final, by status (the partial index on pending rows serves it).
UNFINISHED_SQL = (
    "SELECT status, count(*) FROM deliveries WHERE status IN ('scheduled', 'pending') "
    "GROUP BY status"
)


def unfinished_from_rows(found: Iterable[Sequence[Any]]) -> dict[str, int]:
    counts = {"scheduled": 0, "pending": 0}
    counts.update({str(status): int(n) for status, n in found})
    return counts


def list_sql(
    query: DeliveryQuery, after: tuple[float, str] | None, limit: int, dialect: Dialect
) -> tuple[str, list[Any]]:
    p = dialect.param
    where: list[str] = []
    params: list[Any] = []
    source = "deliveries"
    head: list[Any] = []
    found_by: str | None = None
    if query.phone is not None:
        # one index per field (migration 11), ORed; the few rows are sorted
        found_by = " OR ".join(f"{dialect.field.format(name)} = {p}" for name in PHONE_FIELDS)
        head.extend([query.phone] * len(PHONE_FIELDS))
    elif query.email is not None:
        found_by = f"lower({dialect.field.format('email')}) = lower({p})"
        head.append(query.email)
    if found_by is not None:
        # materialised first: a planner that misjudges how many rows match would else walk
        # the creation-time index newest first, filtering every row (PostgreSQL does)
        source = (
            f"(WITH found AS MATERIALIZED (SELECT * FROM deliveries WHERE {found_by}) "
            "SELECT * FROM found) deliveries"
        )
    if query.phone is not None and query.email is not None:
        where.append(f"lower({dialect.field.format('email')}) = lower({p})")
        params.append(query.email)
    if query.recipient is not None:
        where.append(f"{dialect.recipient_id} = {p}")
        params.append(query.recipient)
    if query.status is not None:
        where.append(f"status = {p}")
        params.append(query.status.value)
    if query.policy is not None:
        where.append(f"policy = {p}")
        params.append(query.policy)
    if query.since is not None:
        where.append(f"created_ts >= {p}")
        params.append(query.since)
    if query.until is not None:
        where.append(f"created_ts < {p}")
        params.append(query.until)
    if query.channel is not None:
        where.append(
            "EXISTS (SELECT 1 FROM attempts a WHERE a.delivery_id = deliveries.id "
            f"AND a.channel = {p})"
        )
        params.append(query.channel)
    if query.idempotency_key is not None:
        where.append(f"idempotency_key = {p}")
        params.append(query.idempotency_key)
    if after is not None:
        where.append(f"(created_ts, id) < ({p}, {p})")
        params.extend(after)
    sql = (
        f"SELECT id, policy, {dialect.recipient_id}, status, channel, created_ts, finished_ts, "
        "(SELECT count(*) FROM attempts a WHERE a.delivery_id = deliveries.id), "
        f"(SELECT {SPENT} FROM attempts a WHERE a.delivery_id = deliveries.id) "
        f"FROM {source}"
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + f" ORDER BY created_ts DESC, id DESC LIMIT {p}"
    )
    params.append(limit + 1)
    return sql, [*head, *params]


def page_from_rows(found: Sequence[Sequence[Any]], limit: int) -> DeliveryPage:
    return page_of(
        [
            DeliverySummary(
                id=row[0],
                policy=row[1],
                recipient_id=str(row[2]),
                status=DeliveryStatus(row[3]),
                channel=row[4],
                created_ts=float(row[5]),
                finished_ts=None if row[6] is None else float(row[6]),
                attempts=int(row[7]),
                cost=None if row[8] is None else float(row[8]),
            )
            for row in found
        ],
        limit,
    )
