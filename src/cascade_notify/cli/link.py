"""`cascade-notify link CHANNEL RECIPIENT_ID -p cascade.yaml [--qr]`: a customer's deep link.

Prints the link that opens the channel's bot for the recipient (`Notifier.link`), and
with `--qr` a QR code of it in the terminal, for a desk or a parcel slip. Nothing is
sent or stored: the link is signed with the policy's `links.secret`, and the customer's
account is linked when they open it and the bot's update reaches `cascade-notify serve`.
The QR code needs the `qr` extra (`pip install "cascade-notify[qr]"`, which is `segno`).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Annotated

import typer

from cascade_notify._duration import parse_duration
from cascade_notify.cli.store import _config, _fail
from cascade_notify.linking import LinkError
from cascade_notify.notifier import Notifier


def link(
    channel: Annotated[str, typer.Argument(help="telegram, max, viber or vk.")],
    recipient_id: Annotated[str, typer.Argument(help="The recipient's id in your system.")],
    policy: Annotated[
        Path, typer.Option("--policy", "-p", help="The cascade policy YAML (with `links:`).")
    ] = Path("cascade.yaml"),
    provider: Annotated[
        str | None, typer.Option(help="The provider to link through (default: the first).")
    ] = None,
    ttl: Annotated[
        str | None, typer.Option(help="How long the link links: 7d, 12h, 90m (default links.ttl).")
    ] = None,
    qr: Annotated[bool, typer.Option("--qr", help="Also print it as a QR code.")] = False,
) -> None:
    """Print the deep link that links a customer's account on CHANNEL to RECIPIENT_ID."""
    config = _config(policy)
    lifetime = None
    if ttl is not None:
        try:
            lifetime = parse_duration(ttl)
        except ValueError as exc:
            raise _fail(f"--ttl: {exc}", 2) from None
    try:
        made = Notifier(config, store="memory://").link(
            channel, recipient_id, provider=provider, ttl=lifetime
        )
    except LinkError as exc:
        raise _fail(f"{policy}: {exc}") from None
    if qr:
        typer.echo(qr_code(made), nl=False)
    typer.echo(made)


def qr_code(text: str) -> str:
    """`text` as a QR code drawn with block characters, for a terminal."""
    try:
        import segno
    except ImportError:
        raise _fail(
            'a QR code needs the `qr` extra: pip install "cascade-notify[qr]" (segno)'
        ) from None
    drawn = io.StringIO()
    segno.make(text, error="m").terminal(out=drawn, compact=True)
    return drawn.getvalue()


__all__ = ["link", "qr_code"]
