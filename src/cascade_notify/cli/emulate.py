"""`cascade-notify emulate [whatsapp telegram viber ...]`: the providers' APIs on loopback.

The emulators (aiohttp's server) are imported when the command runs, not whenever the
CLI starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Annotated

import typer


def emulate(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Emulators to start, e.g. whatsapp telegram viber (default: all)."),
    ] = None,
    receipts_url: Annotated[
        str | None,
        typer.Option(help="Where their webhooks go: {receipts_url}/{provider name}."),
    ] = None,
    host: Annotated[str, typer.Option(help="The address to listen on.")] = "127.0.0.1",
    base_port: Annotated[
        int | None, typer.Option(help="The first emulator's port; the others follow it.")
    ] = None,
) -> None:
    """Start loopback emulators of the providers' APIs and print the settings to paste
    into a policy; their signed webhooks go to --receipts-url. Stop with Ctrl-C."""
    from cascade_notify.testing.emulators import _serve

    known = [*_serve.EMULATORS, *_serve.SERVICES]
    unknown = [n for n in names or () if n not in known]
    if unknown:
        raise typer.BadParameter(
            f"unknown emulator {unknown[0]!r}; known: {', '.join(known)}",
            param_hint="NAMES",
        )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            _run(
                names or _serve.everything(),
                receipts_url or _serve.DEFAULT_RECEIPTS_URL,
                host,
                _serve.DEFAULT_BASE_PORT if base_port is None else base_port,
            )
        )
    typer.echo("emulators stopped")


async def _run(names: list[str], receipts_url: str, host: str, base_port: int) -> None:
    from cascade_notify.testing.emulators._serve import serve

    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await serve(names, receipts_url=receipts_url, host=host, base_port=base_port)
