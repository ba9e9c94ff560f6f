"""`cascade-notify bounce -p cascade.yaml [PROVIDER] < message.eml`: a bounce, piped in.

For a mail server's pipe (an alias `bounces: "|cascade-notify bounce -p /etc/cascade.yaml"`)
or by hand: the RFC 3464 report about one of our messages becomes a `failed` receipt on
the policy's store, through the notifier's one receipt door. Exit 0 when it was recorded
(or was not about one of ours: nothing to do), 1 on an error.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer

from cascade_notify.cli.store import PolicyOption, _config, _fail
from cascade_notify.errors import CascadeError
from cascade_notify.notifier import Notifier
from cascade_notify.policy import Config


def bounce(
    policy: PolicyOption,
    provider: Annotated[
        str | None,
        typer.Argument(help="The smtp provider the bounce is for (default: the only one)."),
    ] = None,
) -> None:
    """Read a bounce (RFC 3464 delivery-status report) on stdin and record it as a
    `failed` receipt for the message it is about."""
    config = _config(policy)
    names = [n for n, p in config.providers.items() if p.type == "smtp"]
    if provider is None:
        if len(names) != 1:
            found = ", ".join(names) or "none"
            raise _fail(f"{policy}: name the smtp provider (smtp providers: {found})")
        provider = names[0]
    elif provider not in names:
        raise _fail(f"{policy}: {provider!r} is not an smtp provider (smtp providers: {names})")
    raw = sys.stdin.buffer.read()
    if not raw.strip():
        raise _fail("no message on stdin: pipe the bounce in as received")
    try:
        said = asyncio.run(_record(config, provider, raw))
    except CascadeError as exc:
        raise _fail(str(exc)) from None
    typer.echo(said)


async def _record(config: Config, name: str, raw: bytes) -> str:
    async with Notifier(config, worker=False) as notifier:
        parse = getattr(notifier.providers[name], "parse_bounce", None)
        receipt = parse(raw) if parse is not None else None
        if receipt is None:
            return "not a failure report about one of our messages: nothing recorded"
        [result] = await notifier.record_receipts([receipt])
        where = (
            "an unknown message (kept a while)"
            if result.delivery_id is None
            else (f"delivery {result.delivery_id}")
        )
        return f"failed receipt ({receipt.code}) recorded for {where}"


__all__ = ["bounce"]
