"""`cascade-notify store migrate|purge`; `cli/__init__.py` mounts it as `store`."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from cascade_notify._duration import format_duration, parse_duration
from cascade_notify.cli._output import err, out
from cascade_notify.errors import CascadeError, PolicyError
from cascade_notify.policy import Config, load_config
from cascade_notify.stores import MemoryStore, Migratable, Purgeable, Store, open_store

PolicyOption = Annotated[
    Path, typer.Option("--policy", "-p", help="The cascade policy YAML (its `store:` is used).")
]

store_app = typer.Typer(
    name="store",
    help="Look after the store: schema migrations and retention.",
    no_args_is_help=True,
    add_completion=False,
)


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error[/red] {escape(message)}")
    return typer.Exit(code)


def _config(policy_file: Path) -> Config:
    if not policy_file.is_file():
        raise _fail(f"{policy_file}: no such file")
    try:
        return load_config(policy_file)
    except PolicyError as exc:
        for issue in exc.issues:
            err.print(f"[red]error[/red] {escape(str(issue))}")
        raise typer.Exit(1) from None


def _name(store: Store) -> str:
    """How to name a store in messages (never with a password)."""
    return "memory://" if isinstance(store, MemoryStore) else repr(store)


def _store(config: Config) -> Store:
    try:
        return open_store(config.store)
    except CascadeError as exc:
        raise _fail(str(exc)) from None


@store_app.command()
def migrate(policy_file: PolicyOption) -> None:
    """Bring the store's schema up to this version of cascade_notify (stop workers first)."""
    store = _store(_config(policy_file))
    if not isinstance(store, Migratable):
        out.print(f"{_name(store)} keeps nothing between runs: nothing to migrate")
        return

    async def run() -> tuple[int, int]:
        try:
            return await store.migrate()
        finally:
            await store.close()

    try:
        before, after = asyncio.run(run())
    except CascadeError as exc:
        raise _fail(str(exc)) from None
    if before == after:
        out.print(f"[green]ok[/green] {_name(store)}: schema already at version {after}")
    elif before == 0:
        out.print(f"[green]ok[/green] {_name(store)}: schema created at version {after}")
    else:
        out.print(
            f"[green]ok[/green] {_name(store)}: schema migrated from version {before} to {after}"
        )


@store_app.command()
def purge(
    policy_file: PolicyOption,
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than", help="Age of finished deliveries to delete: 30d, 12h, 90m, seconds."
        ),
    ],
) -> None:
    """Delete deliveries finished longer ago than --older-than, with their attempts and receipts."""
    try:
        seconds = parse_duration(older_than)
    except ValueError as exc:
        raise _fail(f"--older-than: {exc}", 2) from None
    store = _store(_config(policy_file))
    if not isinstance(store, Purgeable):  # pragma: no cover - every bundled store purges
        raise _fail(f"{_name(store)} cannot purge")

    async def run() -> int:
        await store.open()
        try:
            return await store.purge(seconds, time.time())
        finally:
            await store.close()

    try:
        count = asyncio.run(run())
    except CascadeError as exc:
        raise _fail(str(exc)) from None
    noun = "delivery" if count == 1 else "deliveries"
    out.print(
        f"[green]ok[/green] {_name(store)}: deleted {count} {noun} finished more than "
        f"{format_duration(seconds)} ago"
    )


__all__ = ["migrate", "purge", "store_app"]
