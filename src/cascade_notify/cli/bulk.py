"""`cascade-notify send-many FILE.csv|FILE.jsonl`: a batch of sends from a file, with a
progress bar and a summary; and `--at` as the CLI writes it (ISO times, "+2h")."""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cascade_notify._duration import parse_duration
from cascade_notify.bulk import BATCH, Send, SendManyResult
from cascade_notify.errors import CascadeError, PolicyError, ScheduleError
from cascade_notify.models import Message, Recipient
from cascade_notify.notifier import Notifier
from cascade_notify.policy import Config, load_config

AT_HELP: Final = 'When to start: an ISO time with its offset ("2026-05-01T09:00+03:00") or "+2h".'
_ADDRESSES: Final = ("whatsapp", "telegram", "viber", "max", "vk", "sms", "email", "call", "app")
_RECIPIENT: Final = ("id", *_ADDRESSES, "locale", "timezone", "region", "tags")
_MESSAGE: Final = ("text", "subject", "category")
_SEND: Final = ("idempotency_key", "policy", "at", "priority")
#: The columns (CSV) or keys (JSON Lines) a row may have.
COLUMNS: Final = (*_RECIPIENT, *_MESSAGE, *_SEND, "metadata")
#: How many failures the summary lists one by one.
SHOWN = 20

console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)


def parse_at(text: str, now: datetime | None = None) -> datetime:
    """`+90m`, `+2h`, `+1d` (from now), or an ISO 8601 time with an offset (or `Z`)."""
    value = text.strip()
    if value.startswith("+"):
        try:
            seconds = parse_duration(value[1:])
        except ValueError as exc:
            raise ScheduleError(f"--at {text!r}: {exc}") from None
        base = now or datetime.now(UTC)
        return datetime.fromtimestamp(base.timestamp() + seconds, UTC)
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise ScheduleError(
            f'--at {text!r} is not a time: write e.g. "2026-05-01T09:00+03:00" or "+2h"'
        ) from None
    if at.tzinfo is None:
        raise ScheduleError(
            f"--at {text!r} has no offset: add one (e.g. +03:00, or Z for UTC) so the time "
            "is the same wherever the command runs"
        )
    return at


@dataclass(frozen=True, slots=True)
class Row:
    """One row of the file: its line, and the send it makes (or why it makes none)."""

    line: int
    send: Send | None
    error: str | None = None


def read_rows(path: Path) -> Iterator[Row]:
    """The sends of a `.csv` (a header row naming the columns) or `.jsonl` file (one
    object a line), each with its line number; a row that is not a send says why."""
    suffix = path.suffix.lower()
    with path.open(encoding="utf-8", newline="") as handle:
        if suffix == ".csv":
            reader = csv.DictReader(handle)
            unknown = sorted(set(reader.fieldnames or ()) - set(COLUMNS))
            if unknown:
                raise CascadeError(
                    f"{path}:1: unknown column {unknown[0]!r}; known: {', '.join(COLUMNS)}"
                )
            for fields in reader:
                yield _row(
                    reader.line_num, {k: v for k, v in fields.items() if v not in ("", None)}
                )
        elif suffix in (".jsonl", ".ndjson"):
            for number, text in enumerate(handle, 1):
                if not text.strip():
                    continue
                try:
                    fields = json.loads(text)
                except json.JSONDecodeError as exc:
                    yield Row(number, None, f"not JSON: {exc.msg} (column {exc.colno})")
                    continue
                if not isinstance(fields, dict):
                    yield Row(
                        number, None, f"a line must be a JSON object, not {type(fields).__name__}"
                    )
                    continue
                yield _row(number, fields)
        else:
            raise CascadeError(
                f"{path}: send-many reads .csv or .jsonl files, not {suffix or 'this'}"
            )


def _row(line: int, fields: dict[str, Any]) -> Row:
    unknown = sorted(set(fields) - set(COLUMNS))
    if unknown:
        return Row(line, None, f"unknown field {unknown[0]!r}")
    try:
        given = {k: fields[k] for k in _RECIPIENT if k in fields}
        if isinstance(given.get("tags"), str):  # a CSV cell: "vip, b2b"
            given["tags"] = [t.strip() for t in given["tags"].split(",") if t.strip()]
        if isinstance(given.get("tags"), list):
            given["tags"] = frozenset(given["tags"])
        recipient = Recipient(**given)
        metadata = fields.get("metadata") or {}
        if isinstance(metadata, str):
            metadata = json.loads(metadata)
        message = Message(**{k: fields[k] for k in _MESSAGE if k in fields}, metadata=metadata)
        at = fields.get("at")
        return Row(
            line,
            Send(
                recipient,
                message,
                idempotency_key=fields.get("idempotency_key"),
                policy=fields.get("policy"),
                at=None if at is None else parse_at(str(at)),
                priority=fields.get("priority"),
            ),
        )
    except (CascadeError, TypeError, ValueError) as exc:
        return Row(line, None, str(exc))


def send_many(
    file: Annotated[Path, typer.Argument(help="A .csv (with a header row) or .jsonl file.")],
    policy_file: Annotated[Path, typer.Option("--policy", "-p", help="The cascade policy YAML.")],
    policy: Annotated[
        str | None, typer.Option("--policy-name", help="Policy for rows that name none.")
    ] = None,
    at: Annotated[str | None, typer.Option(help=AT_HELP + " For rows that say none.")] = None,
    priority: Annotated[
        str | None, typer.Option(help="high, normal or bulk, for rows that say none.")
    ] = None,
    batch: Annotated[int, typer.Option(min=1, help="Rows per store transaction.")] = BATCH,
) -> None:
    """Store a send for each row of FILE, in batches; the workers send them. A bad row is
    reported with its line and the others are stored; exit 1 if any row was not."""
    if not file.is_file():
        errors.print(f"[red]error[/red] {file}: no such file")
        raise typer.Exit(2)
    try:
        config = load_config(policy_file)
        start = None if at is None else parse_at(at)
        rows = list(read_rows(file))
    except PolicyError as exc:
        for issue in exc.issues:
            errors.print(f"[red]error[/red] {issue}")
        raise typer.Exit(2) from None
    except (CascadeError, OSError, UnicodeDecodeError) as exc:
        errors.print(f"[red]error[/red] {exc}")
        raise typer.Exit(2) from None
    good = [row for row in rows if row.send is not None]
    try:
        result = asyncio.run(_send_all(config, good, policy, start, priority, batch))
    except CascadeError as exc:
        errors.print(f"[red]error[/red] {exc}")
        raise typer.Exit(2) from None
    failed = [(row.line, row.error or "") for row in rows if row.send is None]
    failed += [(good[f.index].line, str(f.error)) for f in result.failures]
    failed.sort()
    known = result.stored - result.created
    console.print(
        f"[bold]{result.stored}[/bold] of {len(rows)} rows stored "
        f"({result.created} new, {known} already known by their idempotency key), "
        f"[{'red' if failed else 'green'}]{len(failed)} not stored[/]"
    )
    for line, why in failed[:SHOWN]:
        console.print(f"  {file}:{line}: {why}")
    if len(failed) > SHOWN:
        console.print(f"  … and {len(failed) - SHOWN} more")
    if result.stopped is not None:
        console.print(f"[red]stopped[/red]: {result.stopped}; the rows after it were not read")
    if failed or result.stopped is not None:
        raise typer.Exit(1)


async def _send_all(
    config: Config,
    rows: list[Row],
    policy: str | None,
    at: datetime | None,
    priority: str | None,
    batch: int,
) -> SendManyResult:
    sends = [row.send for row in rows if row.send is not None]
    columns = (
        TextColumn("sending"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=errors, transient=True) as bar:
        task = bar.add_task("rows", total=len(sends))
        async with Notifier(config, worker=False) as notifier:
            return await notifier.send_many(
                sends,
                policy=policy,
                at=at,
                priority=priority,
                batch=batch,
                progress=lambda done: bar.update(task, completed=done),
            )


__all__ = ["AT_HELP", "COLUMNS", "parse_at", "read_rows", "send_many"]
