"""`cascade-notify store migrate|purge` and `cascade-notify worker`.

`cli.py` mounts them: `app.add_typer(store_app, name="store")` and
`app.command()(worker)`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from cascade_notify._duration import format_duration, parse_duration
from cascade_notify.errors import CascadeError, PolicyError
from cascade_notify.notifier import Notifier
from cascade_notify.policy import Config, load_config
from cascade_notify.stores import MemoryStore, Migratable, Purgeable, Store, open_store

log = logging.getLogger("cascade_notify.worker")
_out = Console(highlight=False, soft_wrap=True)
_errors = Console(stderr=True, highlight=False, soft_wrap=True)

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
    _errors.print(f"[red]error[/red] {escape(message)}")
    return typer.Exit(code)


def _config(policy_file: Path) -> Config:
    if not policy_file.is_file():
        raise _fail(f"{policy_file}: no such file")
    try:
        return load_config(policy_file)
    except PolicyError as exc:
        for issue in exc.issues:
            _errors.print(f"[red]error[/red] {escape(str(issue))}")
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
        _out.print(f"{_name(store)} keeps nothing between runs: nothing to migrate")
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
        _out.print(f"[green]ok[/green] {_name(store)}: schema already at version {after}")
    elif before == 0:
        _out.print(f"[green]ok[/green] {_name(store)}: schema created at version {after}")
    else:
        _out.print(
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
    _out.print(
        f"[green]ok[/green] {_name(store)}: deleted {count} {noun} finished more than "
        f"{format_duration(seconds)} ago"
    )


def worker(
    policy: PolicyOption,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Advance cascades from the policy's store until SIGTERM or SIGINT.

    On the first signal it takes no new work, finishes the transitions in hand and exits 0;
    a second signal exits at once (130): leases make the unfinished work another worker's
    once they expire.
    """
    config = _config(policy)
    if config.store.startswith("memory"):
        raise _fail(
            f"{policy}: store: memory:// lives in one process, so a worker would see nothing "
            "sent elsewhere; set store: sqlite:///... or postgresql://...",
            2,
        )
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    try:
        asyncio.run(_work(config))
    except CascadeError as exc:
        raise _fail(str(exc)) from None


async def _work(config: Config) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            log.warning(
                "%s again: exiting now; unfinished work resumes when its lease expires", name
            )
            os._exit(130)
        log.info("%s: taking no new work, finishing the transitions in hand", name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    notifier = Notifier(config, worker=True)
    await notifier.start()
    log.info(
        "worker %d on %r: lease %s, up to %d deliveries at once",
        os.getpid(),
        notifier.store,
        format_duration(config.worker.lease),
        config.worker.concurrency,
    )
    try:
        await stop.wait()
    finally:
        await notifier.stop()
    log.info("worker %d stopped", os.getpid())


__all__ = ["migrate", "purge", "store_app", "worker"]
