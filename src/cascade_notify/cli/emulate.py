"""`cascade-notify emulate [whatsapp telegram viber ...]`: the providers' APIs on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Annotated

import typer

from cascade_notify.testing.emulators._serve import (
    DEFAULT_BASE_PORT,
    DEFAULT_RECEIPTS_URL,
    EMULATORS,
    serve,
)


def emulate(
    names: Annotated[
        list[str] | None,
        typer.Argument(help=f"Emulators to start: any of {', '.join(EMULATORS)} (default all)."),
    ] = None,
    receipts_url: Annotated[
        str,
        typer.Option(help="Where their webhooks go: {receipts_url}/{provider name}."),
    ] = DEFAULT_RECEIPTS_URL,
    host: Annotated[str, typer.Option(help="The address to listen on.")] = "127.0.0.1",
    base_port: Annotated[
        int, typer.Option(help="The first emulator's port; the others follow it.")
    ] = DEFAULT_BASE_PORT,
) -> None:
    """Start loopback emulators of the providers' APIs and print the settings to paste
    into a policy; their signed webhooks go to --receipts-url. Stop with Ctrl-C."""
    unknown = [n for n in names or () if n not in EMULATORS]
    if unknown:
        raise typer.BadParameter(
            f"unknown emulator {unknown[0]!r}; known: {', '.join(EMULATORS)}", param_hint="NAMES"
        )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(names or None, receipts_url, host, base_port))
    typer.echo("emulators stopped")


async def _run(names: list[str] | None, receipts_url: str, host: str, base_port: int) -> None:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await serve(names, receipts_url=receipts_url, host=host, base_port=base_port)
