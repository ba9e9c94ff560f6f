"""The PostgreSQL store's channel history (`Learning`): the statements that teach it,
shared by the session functions (`calls`) and the statement-by-statement path (`rows`).

A lesson is `[recipient id, channel, rank, reached_ts, failed_ts]`; merging is `GREATEST`
of each (which passes NULLs over), so lessons commute and a replay changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cascade_notify.learned import HISTORY_LIMIT, READ_BONUS, Lesson, Seen
from cascade_notify.stores import _history
from cascade_notify.stores._codec import dumps

_SET = ", ".join(
    f"{c} = GREATEST(channel_history.{c}, excluded.{c})"
    for c in ("rank", "reached_ts", "failed_ts")
)
#: Merge lessons `{l}` (a jsonb array; one row per key, `_history.as_rows`).
TEACH = f"""
    INSERT INTO channel_history (recipient_id, channel, rank, reached_ts, failed_ts)
    SELECT l->>0, l->>1, max((l->>2)::float8), max((l->>3)::float8), max((l->>4)::float8)
    FROM jsonb_array_elements({{l}}) l GROUP BY 1, 2
    ON CONFLICT (recipient_id, channel) DO UPDATE SET {_SET}"""  # noqa: S608 - constant columns
#: Past HISTORY_LIMIT channels, the oldest of the recipients of lessons `{l}` go.
TRIM = f"""
    DELETE FROM channel_history h USING (
        SELECT recipient_id, channel, row_number() OVER (
            PARTITION BY recipient_id ORDER BY
            GREATEST(coalesce(reached_ts, 0), coalesce(failed_ts, 0)) DESC, channel DESC) AS k
        FROM channel_history
        WHERE recipient_id = ANY (ARRAY(SELECT DISTINCT l->>0 FROM jsonb_array_elements({{l}}) l))
    ) t
    WHERE h.recipient_id = t.recipient_id AND h.channel = t.channel AND t.k > {HISTORY_LIMIT}"""  # noqa: S608 - constant columns
#: What a new receipt (`{r}`: a record with `status` and `ts`) teaches the history of
#: delivery `{d}`'s recipient, on attempt `{a}`'s channel (`{after}`: the attempt's status
#: once it is heard), if the delivery teaches (its policy's order is learned).
RECEIPT_LESSON = f"""
    SELECT d.recipient->>'id' AS c0, a.channel AS c1,
        CASE WHEN {{r}}.status = 'read' THEN {{r}}.ts + {READ_BONUS}
             WHEN {{r}}.status = 'delivered' THEN {{r}}.ts END AS c2,
        CASE WHEN {{r}}.status IN ('read', 'delivered') THEN {{r}}.ts END AS c3,
        CASE WHEN {{r}}.status = 'failed' THEN {{r}}.ts END AS c4
    FROM deliveries d JOIN attempts a ON a.id = {{a}}
    WHERE d.id = {{d}} AND d.unusable ? '@order'
        AND ({{r}}.status IN ('read', 'delivered')
             OR ({{r}}.status = 'failed' AND {{after}} = 'failed'))"""  # noqa: S608 - constant columns
HISTORY = "SELECT channel, rank, reached_ts, failed_ts FROM channel_history WHERE recipient_id = %s"


def lessons_json(lessons: Sequence[Lesson]) -> list[Any]:
    return [list(row) for row in _history.as_rows(lessons)]


def teach_statements(lessons: Sequence[Lesson]) -> list[tuple[str, tuple[str]]]:
    """The statements (with their one parameter) that teach `lessons`; none if none."""
    if not lessons:
        return []
    payload = dumps(lessons_json(lessons))
    return [
        (TEACH.format(l="%s::jsonb"), (payload,)),
        (TRIM.format(l="%s::jsonb"), (payload,)),
    ]


def seen(rows: Sequence[Sequence[Any]]) -> dict[str, Seen]:
    return _history.seen_from_rows(tuple(row) for row in rows)
