"""`cascade-notify demo`: three deliveries through a bad hour, on fake providers and fake time."""

from __future__ import annotations

import asyncio
import tempfile
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from cascade_notify._duration import format_duration, human_duration
from cascade_notify.events import Event
from cascade_notify.models import Delivery, Message, Recipient
from cascade_notify.notifier import Notifier
from cascade_notify.policy import DEFAULT_STORE, Config
from cascade_notify.testing import FakeClock, run_until_final

PEOPLE = [
    (
        Recipient(
            id="anna",
            whatsapp="+79161234567",
            telegram="100200300",
            viber="anna.v",
            sms="+79161234567",
            timezone="Europe/Moscow",
        ),
        Message(text="Your parcel A-1234 has arrived at the pick-up point on Tverskaya 1."),
        "Anna: WhatsApp is down, she blocked the bot, Viber gets through",
    ),
    (
        Recipient(
            id="boris",
            whatsapp="+74951234567",
            viber="boris.v",
            sms="+74951234567",
            call="+74951234567",
            timezone="Europe/Moscow",
        ),
        Message(text="Your lawyer has answered your question: please confirm a call time."),
        "Boris: not on WhatsApp, Viber silent, SMS bounced: an operator calls",
    ),
    (
        Recipient(
            id="chloe", whatsapp="+447911123456", sms="+447911123456", timezone="Europe/London"
        ),
        Message(text="Reminder: your appointment is tomorrow at 10:00."),
        "Chloe: WhatsApp works, read within seconds",
    ),
]

_MARKS = {
    "accepted": ("→", "cyan"),
    "delivered": ("✓", "green"),
    "read": ("✓✓", "green"),
    "sent": ("·", "cyan"),
    "transient": ("↻", "yellow"),
    "unknown": ("?", "yellow"),
    "timed_out": ("⌛", "yellow"),
    "failed": ("✗", "red"),
    "unreachable": ("✗", "red"),
    "abandoned": ("–", "dim"),
}


def _clock_text(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes:02d}:{secs:02d}"


def _describe(event: Event, delivery: Delivery) -> Text | None:
    if event.kind == "skipped":
        return Text(f"skip  {event.detail}", style="dim")
    if event.kind == "sending":
        return None
    status = event.status or ""
    mark, style = _MARKS.get(status, ("•", "white"))
    if event.kind == "receipt":
        line = Text(f"{mark:<3}   {status}", style=style)
        if event.detail:
            line.append(f" ({event.detail})", style="dim")
        return line
    if event.kind == "outcome":
        words = {
            "accepted": "accepted",
            "transient": "retry",
            "unknown": "no answer, may be sent",
            "timed_out": "no receipt in time",
            "failed": "rejected",
            "unreachable": "unreachable",
            "abandoned": "no longer waited for",
        }.get(status, status)
        line = Text(f"{mark:<3}   {words}", style=style)
        if event.detail and status not in ("timed_out",):
            line.append(f": {event.detail}", style="dim")
        if status == "accepted":
            step = next((s for s in delivery.steps if s.channel == event.channel), None)
            if step is not None and step.wait_for.value != "accepted":
                line.append(
                    f", waits {format_duration(step.timeout)} for {step.wait_for.value}",
                    style="dim",
                )
        return line
    return None


def run_demo(config: Config, console: Console) -> list[Delivery]:
    """Run the demo deliveries to their ends and print their timelines.

    A policy that names no store gets the embedded default, SQLite; the demo
    keeps that database in a temporary folder so that it leaves nothing behind.
    """
    with tempfile.TemporaryDirectory(prefix="cascade-demo-") as folder:
        store = None
        if config.store == DEFAULT_STORE:
            store = f"sqlite:///{Path(folder) / 'demo.db'}"
        return asyncio.run(_run(config, console, store))


async def _run(config: Config, console: Console, store: str | None) -> list[Delivery]:
    clock = FakeClock()
    events: dict[str, list[Event]] = defaultdict(list)
    notifier = Notifier(config, clock=clock, store=store)
    notifier.subscribe(lambda event: events[event.delivery_id].append(event))
    console.print(Text("cascade-notify demo", style="bold"))
    console.print(
        Text(
            "Fake providers on simulated time: receipts, retries and deadlines "
            "play out in full, in a moment.\n",
            style="dim",
        )
    )
    channels = {name: provider.channel for name, provider in notifier.providers.items()}
    async with notifier:
        started = [await notifier.send(r, m) for r, m, _ in PEOPLE]
        finals = await run_until_final(notifier, clock, [d.id for d in started])
    for (_, message, title), delivery in zip(PEOPLE, finals, strict=True):
        console.print(Text(title, style="bold"))
        console.print(Text(f"  “{message.text}”", style="italic dim"))
        table = Table(show_header=False, box=None, padding=(0, 1), pad_edge=False)
        table.add_column(style="dim", no_wrap=True)
        table.add_column(no_wrap=True)
        table.add_column()
        for event in events[delivery.id]:
            described = _describe(event, delivery)
            if described is None:
                continue
            channel = event.channel or channels.get(event.provider or "", "")
            table.add_row("  " + _clock_text(event.ts - delivery.created_ts), channel, described)
        console.print(table)
        took = (delivery.finished_ts or clock.now()) - delivery.created_ts
        where = f" on [bold]{delivery.channel}[/bold]" if delivery.channel else ""
        style = "green" if delivery.status.value == "delivered" else "red"
        calls = len(delivery.attempts)
        console.print(
            f"  [{style}]⇒ {delivery.status.value}[/{style}]{where} after "
            f"{human_duration(took)}, {calls} provider call{'s' if calls != 1 else ''}\n"
        )
    summary = Table(title="Outcome", title_justify="left")
    for column in ("recipient", "status", "channel", "calls", "time"):
        summary.add_column(column)
    for delivery in finals:
        summary.add_row(
            delivery.recipient.id,
            delivery.status.value,
            delivery.channel or "–",
            str(len(delivery.attempts)),
            human_duration((delivery.finished_ts or 0) - delivery.created_ts),
        )
    console.print(summary)
    console.print(
        Text("Every step above is in the store: `await notifier.get(id)` returns it.", style="dim")
    )
    return finals
