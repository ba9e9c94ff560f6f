"""`cascade-notify calls list|claim|done|no-answer|wrong-number`: the call queue of
`type: call_queue` (tasks kept in the policy file's store), worked from a terminal.

Each command opens the policy's store as a notifier that runs no worker: an outcome
is recorded as a receipt, and the workers on that store carry the cascade on.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from cascade_notify.errors import CascadeError, PolicyError
from cascade_notify.models import CallStatus, QueuedCall
from cascade_notify.notifier import Notifier
from cascade_notify.policy import Config, load_config

calls_app = typer.Typer(
    help="List, claim and close the call tasks of type: call_queue, kept in the store.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(highlight=False, width=160)
errors = Console(stderr=True, highlight=False)
T = TypeVar("T")

PolicyOption = Annotated[Path, typer.Option("--policy", "-p", help="The cascade policy YAML.")]
StoreOption = Annotated[
    str | None, typer.Option("--store", help="Another store URL than the policy's.")
]
TaskArgument = Annotated[str, typer.Argument(help="The call's task id (see `calls list`).")]
NoteOption = Annotated[str | None, typer.Option("--note", help="What the operator says.")]


def _config(path: Path) -> Config:
    try:
        return load_config(path)
    except PolicyError as exc:
        for issue in exc.issues:
            errors.print(f"[red]error[/red] {issue}")
        raise typer.Exit(1) from None


def _do(policy: Path, store: str | None, work: Callable[[Notifier], Awaitable[T]]) -> T:
    config = _config(policy)

    async def run() -> T:
        async with Notifier(config, worker=False, store=store) as notifier:
            return await work(notifier)

    try:
        return asyncio.run(run())
    except CascadeError as exc:
        errors.print(f"[red]error[/red] {exc}")
        raise typer.Exit(1) from None


def _when(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _show(calls: list[QueuedCall]) -> None:
    table = Table(box=None, pad_edge=False)
    for column in ("task", "status", "phone", "from", "due by", "operator", "summary"):
        table.add_column(column, overflow="fold")
    for call in calls:
        table.add_row(
            call.task_id, call.status.value, call.phone, _when(call.not_before),
            _when(call.due_by), call.operator or "", call.summary,
        )  # fmt: skip
    console.print(table)


def _one(call: QueuedCall, changed_to: CallStatus) -> None:
    console.print(f"{call.task_id}: {call.status.value}")


@calls_app.command("list")
def list_calls(
    policy: PolicyOption,
    store: StoreOption = None,
    all_calls: Annotated[bool, typer.Option("--all", help="Finished calls too.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
) -> None:
    """Show the open and claimed calls, soonest due first."""
    states = None if all_calls else (CallStatus.OPEN, CallStatus.CLAIMED)
    _show(_do(policy, store, lambda n: n.calls.list(states, limit=limit)))


@calls_app.command("claim")
def claim(
    policy: PolicyOption,
    task_id: Annotated[
        str | None, typer.Argument(help="A call's task id (default: the next due).")
    ] = None,
    operator: Annotated[
        str | None, typer.Option("--operator", help="Who takes it (default: your login).")
    ] = None,
    store: StoreOption = None,
) -> None:
    """Take a call: the one named, or the open call due soonest whose window has begun."""
    who = operator or getpass.getuser()
    call = _do(policy, store, lambda n: n.calls.claim(who, task_id))
    if call is None:
        errors.print("no call to claim" if task_id is None else f"{task_id}: not open")
        raise typer.Exit(1)
    _show([call])
    console.print(f"Text: {call.text}")


@calls_app.command("done")
def done(
    task_id: TaskArgument, policy: PolicyOption, note: NoteOption = None, store: StoreOption = None
) -> None:
    """The customer was reached: the call's step is delivered."""
    _one(_do(policy, store, lambda n: n.calls.done(task_id, note)), CallStatus.DONE)


@calls_app.command("no-answer")
def no_answer(
    task_id: TaskArgument,
    policy: PolicyOption,
    note: NoteOption = None,
    again: Annotated[
        bool, typer.Option("--again", help="Put it back to try again before it is due.")
    ] = False,
    store: StoreOption = None,
) -> None:
    """Nobody answered: the call's step fails (or, with --again, the call is requeued)."""
    call = _do(policy, store, lambda n: n.calls.no_answer(task_id, note, again=again))
    _one(call, CallStatus.OPEN if again else CallStatus.NO_ANSWER)


@calls_app.command("wrong-number")
def wrong_number(
    task_id: TaskArgument, policy: PolicyOption, note: NoteOption = None, store: StoreOption = None
) -> None:
    """The number is not the customer's: the step fails, the number is bad everywhere."""
    call = _do(policy, store, lambda n: n.calls.wrong_number(task_id, note))
    _one(call, CallStatus.WRONG_NUMBER)
