"""`cascade-notify status ID`, `deliveries`, `stats`: what happened, read from the store
named by `--policy FILE` (its `store:`) or `--store URL`; `cli/__init__.py` mounts them."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from cascade_notify._duration import human_duration, parse_duration
from cascade_notify.cli.store import _config, _fail
from cascade_notify.errors import CascadeError
from cascade_notify.models import DeliveryStatus
from cascade_notify.observe import api, timeline
from cascade_notify.observe.types import DeliveryQuery, Stats, check_by
from cascade_notify.stores import Store, open_store

T = TypeVar("T")
_out = Console(highlight=False, soft_wrap=True)

PolicyFile = Annotated[
    Path | None,
    typer.Option("--policy", "-p", help="The cascade policy YAML: its `store:` is read."),
]
StoreUrl = Annotated[
    str | None, typer.Option("--store", help="The store's URL, instead of --policy.")
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]

_MARKS = {
    "accepted": ("→", "cyan"),
    "sent": ("·", "cyan"),
    "delivered": ("✓", "green"),
    "read": ("✓✓", "green"),
    "transient": ("↻", "yellow"),
    "timed_out": ("⌛", "yellow"),
    "unknown": ("?", "yellow"),
    "sending": ("…", "yellow"),
    "failed": ("✗", "red"),
    "unreachable": ("✗", "red"),
    "abandoned": ("–", "dim"),
}


def _store(policy: Path | None, url: str | None) -> Store:
    if (policy is None) == (url is None):
        raise _fail("name the store with --policy FILE or --store URL (one of them)", 2)
    try:
        return open_store(url if url is not None else _config(policy).store)  # type: ignore[arg-type]
    except CascadeError as exc:
        raise _fail(str(exc)) from None


def _run(store: Store, work: Callable[[Store], Awaitable[T]]) -> T:
    async def run() -> T:
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except CascadeError as exc:
        raise _fail(str(exc)) from None


def moment(text: str, now: float, option: str) -> float:
    """`1d`, `90m` (that long before now) or an ISO time (UTC unless it says)."""
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        message = f"{option}: {text!r} is neither a duration (1d, 12h) nor an ISO time"
        raise _fail(message, 2) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _when(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def status(
    delivery_id: Annotated[str, typer.Argument(help="The delivery's id.")],
    policy: PolicyFile = None,
    store: StoreUrl = None,
    as_json: Json = False,
) -> None:
    """One delivery's timeline: each step, attempt, receipt and skip, in the recipient's
    time zone."""
    opened = _store(policy, store)
    found = _run(opened, lambda s: s.get(delivery_id))
    if found is None:
        raise _fail(f"no delivery {delivery_id!r} in the store")
    story = timeline(found)
    if as_json:
        _out.print_json(json.dumps(story.to_dict()))
        return
    d = found
    color = "green" if d.status is DeliveryStatus.DELIVERED else "yellow"
    if d.status in (DeliveryStatus.EXHAUSTED, DeliveryStatus.EXPIRED):
        color = "red"
    where = f" on {d.channel}" if d.channel else ""
    _out.print(
        f"[bold]delivery {escape(d.id)}[/bold] · policy {escape(d.policy)} · "
        f"recipient {escape(d.recipient.id)} · [{color}]{d.status.value}{where}[/{color}]"
    )
    created = datetime.fromtimestamp(d.created_ts, story.zone)
    if d.route is not None:
        _out.print(f"[dim]policy chosen by {escape(d.route.describe())}[/dim]")
    if d.order is not None:
        _out.print(f"[dim]{escape(d.order.describe())}[/dim]")
    _out.print(f"[dim]times in {story.zone_name}; created {created:%Y-%m-%d %H:%M:%S}[/dim]")
    table = Table(box=None, pad_edge=False)
    for column in ("", "after", "at", "step", "channel", "provider", "what", "detail", "cost"):
        table.add_column(column)
    for entry in story.entries:
        mark, style = _MARKS.get(entry.status or "", ("•", "white"))
        what = entry.kind if entry.status is None else f"{entry.kind} {entry.status}"
        if entry.kind == "skipped":
            mark, style, what = "↷", "dim", "skipped"
        elif entry.kind in ("created", "finished"):
            mark, style = ("●", "bold")
        detail = entry.detail or ""
        if entry.code:
            detail = f"{detail} [{entry.code}]".strip()
        table.add_row(
            Text(mark, style=style),
            f"+{human_duration(entry.offset)}",
            _clock(entry.at(story.zone), created),
            "" if entry.step is None else str(entry.step),
            entry.channel or "",
            entry.provider or "",
            Text(what, style=style),
            Text(detail),
            "" if entry.cost is None else f"{entry.cost:g}",
        )
    _out.print(table)


def _clock(when: datetime, created: datetime) -> str:
    """The time of day, with the date when it is not the day the delivery was created."""
    return f"{when:%H:%M:%S}" if when.date() == created.date() else f"{when:%Y-%m-%d %H:%M:%S}"


def deliveries(
    policy: PolicyFile = None,
    store: StoreUrl = None,
    recipient: Annotated[str | None, typer.Option(help="Only this recipient id's.")] = None,
    state: Annotated[
        str | None, typer.Option("--status", help="pending, delivered, exhausted, ...")
    ] = None,
    channel: Annotated[str | None, typer.Option(help="Only those with an attempt here.")] = None,
    policy_name: Annotated[
        str | None, typer.Option("--policy-name", help="Only this policy's deliveries.")
    ] = None,
    since: Annotated[str | None, typer.Option(help="Created since: 1d, 12h, or ISO.")] = None,
    until: Annotated[str | None, typer.Option(help="Created before: 1d, or ISO.")] = None,
    limit: Annotated[int, typer.Option(help="How many on a page (1-1000).")] = 50,
    cursor: Annotated[str | None, typer.Option(help="The next page: a previous cursor.")] = None,
    as_json: Json = False,
) -> None:
    """List deliveries, newest first, a page at a time (--cursor for the next)."""
    now = time.time()
    try:
        query = DeliveryQuery(
            recipient=recipient,
            status=state,  # type: ignore[arg-type]  # checked by DeliveryQuery
            channel=channel,
            policy=policy_name,
            since=None if since is None else moment(since, now, "--since"),
            until=None if until is None else moment(until, now, "--until"),
        )
    except CascadeError as exc:
        raise _fail(str(exc), 2) from None
    opened = _store(policy, store)
    page = _run(opened, lambda s: api.deliveries(s, query, cursor=cursor, limit=limit))
    if as_json:
        data = {
            "deliveries": [
                {
                    "id": d.id,
                    "policy": d.policy,
                    "recipient": d.recipient_id,
                    "status": d.status.value,
                    "channel": d.channel,
                    "created_at": d.created_at.isoformat(),
                    "finished_at": None
                    if d.finished_ts is None
                    else datetime.fromtimestamp(d.finished_ts, UTC).isoformat(),
                    "attempts": d.attempts,
                }
                for d in page.items
            ],
            "cursor": page.cursor,
        }
        _out.print_json(json.dumps(data))
        return
    table = Table(box=None, pad_edge=False)
    table.add_column("created (UTC)")
    table.add_column("id", no_wrap=True, min_width=32)  # whole: people copy it to `status`
    for column in ("recipient", "policy", "status", "channel", "attempts"):
        table.add_column(column)
    for d in page.items:
        table.add_row(
            _when(d.created_ts),
            d.id,
            escape(d.recipient_id),
            escape(d.policy),
            d.status.value,
            d.channel or "",
            str(d.attempts),
        )
    _out.print(table)
    if page.cursor is not None:
        _out.print(f"[dim]more: --cursor {page.cursor}[/dim]")


def stats(
    policy: PolicyFile = None,
    store: StoreUrl = None,
    since: Annotated[str, typer.Option(help="From: 7d, 12h, or an ISO time.")] = "7d",
    until: Annotated[str | None, typer.Option(help="To (default now): 1d, or ISO.")] = None,
    by: Annotated[
        str, typer.Option(help="Group by channel, provider, policy, step, day (a,b: both).")
    ] = "channel",
    chart: Annotated[
        Path | None, typer.Option(help="Also draw charts into FILE.png or FILE.svg.")
    ] = None,
    as_json: Json = False,
) -> None:
    """Sent, delivered, read, failed, skipped, delivery rate, time to delivery, money
    spent and rescues, per group, for the deliveries created in the window."""
    now = time.time()
    start = moment(since, now, "--since")
    end = now if until is None else moment(until, now, "--until")
    try:
        dims = check_by([part.strip() for part in by.split(",") if part.strip()])
    except CascadeError as exc:
        raise _fail(str(exc), 2) from None
    if chart is not None and chart.suffix.lower() not in (".png", ".svg"):
        raise _fail(f"--chart {chart}: write a .png or .svg file name", 2)
    opened = _store(policy, store)

    async def work(s: Store) -> tuple[Stats, Stats | None, Stats | None]:
        found = await api.stats(s, now, since=start, until=end, by=dims)
        if chart is None:
            return found, None, None
        per_day = await api.stats(s, now, since=start, until=end, by=("channel", "day"))
        per_channel = await api.stats(s, now, since=start, until=end, by="channel")
        return found, per_day, per_channel

    result, per_day, per_channel = _run(opened, work)
    if chart is not None:
        from cascade_notify.observe.charts import write_chart

        assert per_day is not None and per_channel is not None
        try:
            write_chart(per_day, per_channel, chart)
        except CascadeError as exc:
            raise _fail(str(exc)) from None
    if as_json:
        _out.print_json(json.dumps(result.to_dict()))
        return
    _print_stats(result)
    if chart is not None:
        _out.print(f"[green]ok[/green] charts written to {chart}")


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.1f}s" if value < 60 else human_duration(value)


def _print_stats(result: Stats) -> None:
    share = result.delivered_share
    _out.print(
        f"[bold]{result.deliveries} deliveries[/bold] created {_when(result.since)} – "
        f"{_when(result.until)} UTC: "
        + ", ".join(f"{n} {s}" for s, n in sorted(result.outcomes.items()))
        + ("" if share is None else f" · {share:.1%} of those that ended were delivered")
    )
    table = Table(box=None, pad_edge=False)
    for name in result.by:
        table.add_column(name)
    for column in ("sent", "delivered", "read", "failed", "rate", "won", "median", "p95"):
        table.add_column(column, justify="right")
    for column in ("rescues", "spent"):
        table.add_column(column, justify="right")
    table.add_column("skipped")
    for row in result.rows:
        rate = row.delivery_rate
        table.add_row(
            *(escape(str(part)) for part in row.key),
            str(row.sent),
            str(row.delivered),
            str(row.read),
            str(row.failed),
            "" if rate is None else f"{rate:.1%}",
            str(row.won),
            _seconds(row.median_seconds),
            _seconds(row.p95_seconds),
            str(row.rescues),
            "" if row.spent is None else f"{row.spent:.2f}",
            ", ".join(f"{reason} {n}" for reason, n in sorted(row.skipped.items())),
        )
    _out.print(table)


__all__ = ["deliveries", "moment", "stats", "status"]
