"""`cascade-notify demo`: three deliveries through a bad hour, on fake providers and fake time,
then the 4 October 2021 outage simulated, scaled down, under a fixed and a learned order."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
import tempfile
from collections import defaultdict
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.text import Text

from cascade_notify._duration import format_duration, human_duration
from cascade_notify.cli._output import aligned
from cascade_notify.events import Event
from cascade_notify.models import CHANNELS, Delivery, Message, Recipient
from cascade_notify.notifier import Notifier
from cascade_notify.policy import DEFAULT_STORE, Config, load_config
from cascade_notify.simulate import load_scenario, simulate
from cascade_notify.simulate.report import PolicyReport
from cascade_notify.testing import FakeClock, run_until_final

#: The last scene: the bundled 2021 scenario (examples/scenarios, copied into the package)
#: cut to this many deliveries, to customers in the same proportion (a few seconds).
OUTAGE_DELIVERIES = 2000

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


def _retried(events: list[Event], i: int) -> bool:
    """Whether the transient failure at `events[i]` was tried again on its provider
    (the next send of the delivery went to the same provider, in the same step)."""
    failed = events[i]
    for later in events[i + 1 :]:
        if later.kind in ("sending", "skipped", "finished"):
            return later.kind == "sending" and later.provider == failed.provider
    return False


def _describe(event: Event, delivery: Delivery, retried: bool) -> tuple[str, str, Text] | None:
    """The mark, its style and the words for one event; None for one not shown."""
    if event.kind == "skipped":
        return "skip", "dim", Text(event.detail or event.status or "", style="dim")
    status = event.status or ""
    mark, style = _MARKS.get(status, ("•", "white"))
    if event.kind == "receipt":
        line = Text(status, style=style)
        if event.detail:
            line.append(f" ({event.detail})", style="dim")
        return mark, style, line
    if event.kind != "outcome":
        return None
    if status == "transient" and not retried:
        mark, style, words = "✗", "red", "failed, no tries left"
    else:
        words = {
            "accepted": "accepted",
            "transient": "retry",
            "unknown": "no answer, may be sent",
            "timed_out": "no receipt in time",
            "failed": "rejected",
            "unreachable": "unreachable",
            "abandoned": "no longer waited for",
        }.get(status, status)
    line = Text(words, style=style)
    if event.detail and status != "timed_out":
        line.append(f": {event.detail}", style="dim")
    if status == "accepted":
        step = next((s for s in delivery.steps if s.channel == event.channel), None)
        if step is not None and step.wait_for.value != "accepted":
            line.append(
                f", waits {format_duration(step.timeout)} for {step.wait_for.value}",
                style="dim",
            )
    return mark, style, line


def _neutral_title(recipient: Recipient) -> str:
    """A title that claims nothing about a policy the demo did not write."""
    channels = [c for c in (*CHANNELS, *recipient.addresses) if recipient.address(c)]
    if not channels:
        return recipient.id.title()
    listed = ", ".join(channels[:-1]) + (" and " if len(channels) > 1 else "") + channels[-1]
    return f"{recipient.id.title()}, who has {listed}"


def run_demo(
    config: Config, console: Console | None = None, *, stories: bool = True
) -> list[Delivery]:
    """Run the demo deliveries to their ends and print their timelines.

    `stories`: the policy is the bundled one, so each delivery gets the title of its
    story; another policy plays another scenario, so the titles only say who is who.
    A policy that names no store gets the embedded default, SQLite, which the demo
    keeps in a temporary folder and deletes at the end (the closing line says so).
    """
    console = console or Console(highlight=False, soft_wrap=not sys.stdout.isatty())
    with tempfile.TemporaryDirectory(prefix="cascade-demo-") as folder:
        store = None
        if config.store == DEFAULT_STORE:
            store = f"sqlite:///{Path(folder) / 'demo.db'}"
        finals = asyncio.run(_run(config, console, store, stories))
        if stories:
            outage_scene(console)
    if store is not None:
        closing = (
            "The demo kept its store in a temporary SQLite file, deleted now. In your app "
            "every step of the three deliveries above stays in the store: `await notifier.get(id)` "
            "returns it."
        )
    else:
        closing = (
            "Every step of the three deliveries above is in the store "
            f"{config.store.split('?')[0]}: `await notifier.get(id)` returns it."
        )
    _print(console, closing, "dim")
    return finals


def _packaged(name: str) -> str:
    return resources.files("cascade_notify.cli").joinpath("outage", name).read_text("utf-8")


def outage_scene(console: Console, deliveries: int = OUTAGE_DELIVERIES) -> list[PolicyReport]:
    """The 4 October 2021 outage on a parcel carrier's day, cut to `deliveries`, simulated
    under the fixed order and the learned one; printed as a short table."""
    full = load_scenario(_packaged("outage-2021-10-04.yaml"))
    traffic = full.model.traffic
    share = deliveries / traffic.deliveries
    customers = None if traffic.recipients is None else max(1, round(traffic.recipients * share))
    cut = traffic.model_copy(update={"deliveries": deliveries, "recipients": customers})
    scenario = dataclasses.replace(full, model=full.model.model_copy(update={"traffic": cut}))
    fixed = load_config(_packaged("parcel-policy.yaml"))
    learned = load_config(_packaged("parcel-policy-learned.yaml"))
    library = logging.getLogger("cascade_notify")
    level = library.level
    library.setLevel(logging.ERROR)  # a breaker opening is the point here, not news
    try:
        report = simulate(fixed, scenario, seed=1, compare=learned, breaker_baseline=False)
    finally:
        library.setLevel(level)
    _print(
        console,
        "The outage of 4 October 2021, simulated: fixed order against learned order",
        "bold",
    )
    _print(
        console,
        f"WhatsApp refusing connections 15:40–21:40 UTC on a parcel carrier's day, cut to "
        f"{deliveries:,} messages to {customers or deliveries:,} customers (the full day: "
        f"cascade-notify simulate, docs/simulate.md). The learned order puts first the "
        "channel that last reached each customer.",
        "dim",
    )
    currency = report.currency or ""
    rows: list[list[str | Text]] = [
        [Text(c, style="bold") for c in ("  order", "delivered", "p95", "SMS sends", "SMS cost")]
    ]
    for name, run in zip(("fixed", "learned"), report.policies, strict=True):
        sms = next((c for c in run.channels if c.channel == "sms"), None)
        rows.append(
            [
                "  " + name,
                f"{run.delivery_rate:.2%}",
                _p95(run.p95),
                f"{sms.sends:,}" if sms else "0",
                f"{sms.cost:,.2f} {currency}".rstrip() if sms else "0",
            ]
        )
    for line in aligned(rows):
        _print(console, line)
    _print(console, "")
    return list(report.policies)


def _p95(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds:.1f} s" if seconds < 60 else human_duration(seconds)


def _print(console: Console, text: Text | str, style: str = "") -> None:
    line = text if isinstance(text, Text) else Text(text, style=style)
    line.rstrip()
    console.print(line, soft_wrap=True)


async def _run(
    config: Config, console: Console, store: str | None, stories: bool
) -> list[Delivery]:
    clock = FakeClock()
    events: dict[str, list[Event]] = defaultdict(list)
    notifier = Notifier(config, clock=clock, store=store)
    notifier.subscribe(lambda event: events[event.delivery_id].append(event))
    _print(console, "cascade-notify demo", "bold")
    _print(
        console,
        "Fake providers on simulated time: receipts, retries and deadlines play out in full, "
        "in a moment.",
        "dim",
    )
    _print(console, "")
    channels = {name: provider.channel for name, provider in notifier.providers.items()}
    async with notifier:
        started = [await notifier.send(r, m) for r, m, _ in PEOPLE]
        finals = await run_until_final(notifier, clock, [d.id for d in started])
    for (recipient, message, story), delivery in zip(PEOPLE, finals, strict=True):
        _print(console, story if stories else _neutral_title(recipient), "bold")
        _print(console, Text(f"  “{message.text}”", style="italic dim"))
        rows: list[list[str | Text]] = []
        timeline = events[delivery.id]
        for i, event in enumerate(timeline):
            described = _describe(event, delivery, _retried(timeline, i))
            if described is None:
                continue
            mark, style, words = described
            channel = event.channel or channels.get(event.provider or "", "")
            stamp = _clock_text(event.ts - delivery.created_ts)
            rows.append([Text("  " + stamp, style="dim"), channel, Text(mark, style=style), words])
        for line in aligned(rows):
            _print(console, line)
        took = (delivery.finished_ts or clock.now()) - delivery.created_ts
        style = "green" if delivery.status.value == "delivered" else "red"
        ending = Text("  ")
        ending.append(f"⇒ {delivery.status.value}", style=style)
        if delivery.channel:
            ending.append(" on ").append(delivery.channel, style="bold")
        calls = len(delivery.attempts)
        ending.append(f" after {human_duration(took)}, {calls} provider call")
        ending.append("s" if calls != 1 else "")
        _print(console, ending)
        _print(console, "")
    _print(console, "Outcome", "bold")
    summary: list[list[str | Text]] = [
        [Text(c, style="bold") for c in ("  recipient", "status", "channel", "calls", "time")]
    ]
    for delivery in finals:
        summary.append(
            [
                "  " + delivery.recipient.id,
                delivery.status.value,
                delivery.channel or "–",
                str(len(delivery.attempts)),
                human_duration((delivery.finished_ts or 0) - delivery.created_ts),
            ]
        )
    for line in aligned(summary):
        _print(console, line)
    _print(console, "")
    return finals
