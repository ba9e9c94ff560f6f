"""`cascade-notify send`: one message by cascade, followed live.

The delivery id is printed the moment the delivery is stored; then each attempt's
outcome, each receipt and each skipped step as it happens (re-reading the stored
delivery whenever this process hears of news, and every half second for news that
reached another process, such as a receipt taken by `cascade-notify serve`).
`--json` prints the same as JSON lines (see docs/cli.md). Ctrl-C leaves the delivery
in the store, pending, for a worker to carry on.

Exit codes: 0 delivered; 1 the cascade ended otherwise (exhausted, expired,
cancelled), or the policy file is wrong; 2 bad input (nothing was sent); 3 still
pending after `--timeout`; 130 interrupted (the delivery stays pending).
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.text import Text

from cascade_notify.cli._output import aligned, err, out, store_label
from cascade_notify.cli.bulk import AT_HELP, parse_at
from cascade_notify.cli.store import _config
from cascade_notify.errors import CascadeError
from cascade_notify.events import Event
from cascade_notify.models import (
    Attempt,
    AttemptStatus,
    Delivery,
    DeliveryStatus,
    Message,
    Recipient,
)
from cascade_notify.notifier import Notifier
from cascade_notify.policy import Config

EXIT_PENDING = 3
EXIT_INTERRUPTED = 130
_REREAD = 0.5  # seconds between reads of the stored delivery when nothing was heard

# attempt statuses that a receipt sets: the receipt's own line says it
_FROM_RECEIPTS = {AttemptStatus.DELIVERED, AttemptStatus.READ}


@dataclass
class Follower:
    """Prints what is new in a delivery each time it is shown one."""

    json: bool
    created: float = 0.0
    seen: set[tuple[str, ...]] = field(default_factory=set)
    first: bool = True

    def started(self, delivery: Delivery) -> None:
        self.created = delivery.created_ts
        self._emit(
            {
                "type": "delivery",
                "delivery_id": delivery.id,
                "policy": delivery.policy,
                "status": delivery.status.value,
                "ts": delivery.created_ts,
            },
            Text.assemble(
                ("delivery ", ""),
                (delivery.id, "bold"),
                f" {delivery.status.value} (policy {delivery.policy})",
            ),
        )

    def update(self, delivery: Delivery, now: float) -> None:
        """Print what is new in `delivery`, seen at `now`. Each line's time is when it
        happened: a skip or a call's outcome by the store's time, a receipt by when it
        came (`now` while following; on the first look at a stored delivery, the
        receipt's own time)."""
        lines: list[tuple[float, dict[str, Any], str, str, str, str]] = []
        for skip in delivery.skipped:
            if self._new("skip", str(skip.step), skip.channel):
                lines.append((
                    skip.ts,
                    {"type": "skipped", "channel": skip.channel, "reason": skip.reason,
                     "detail": skip.detail},
                    skip.channel, "", f"skipped: {skip.detail or skip.reason}", "dim",
                ))  # fmt: skip
        for attempt in delivery.attempts:
            lines.extend(self._attempt(attempt, now))
        self.first = False
        for ts, record, channel, provider, what, style in sorted(lines, key=lambda x: x[0]):
            self._line(record, ts, channel, provider, what, style)

    def _attempt(
        self, attempt: Attempt, now: float
    ) -> list[tuple[float, dict[str, Any], str, str, str, str]]:
        lines = []
        status = attempt.status
        outcomes = []
        if attempt.receipts or status in _FROM_RECEIPTS:
            outcomes.append(AttemptStatus.ACCEPTED)  # receipts follow an accepted call
        if status is not AttemptStatus.SENDING and status not in _FROM_RECEIPTS:
            failed_receipt = any(r.status.value == "failed" for r in attempt.receipts)
            if not (status is AttemptStatus.FAILED and failed_receipt):
                outcomes.append(status)
        for outcome in outcomes:
            if not self._new("attempt", attempt.id, outcome.value):
                continue
            if self.first or outcome is AttemptStatus.ACCEPTED:
                ts = (
                    attempt.started_ts
                    if outcome is AttemptStatus.ACCEPTED
                    else (attempt.finished_ts or attempt.started_ts)
                )
                ts = ts if self.first else min(ts, now)
            else:
                ts = now
            what = outcome.value
            if attempt.error and outcome is status:
                what += f" ({attempt.error})"
            style = {"accepted": "cyan", "transient": "yellow", "unknown": "yellow"}.get(
                outcome.value, "red" if outcome.value in ("failed", "unreachable") else "dim"
            )
            lines.append((
                ts,
                {"type": "attempt", "attempt_id": attempt.id, "channel": attempt.channel,
                 "provider": attempt.provider, "status": outcome.value,
                 "code": attempt.code if outcome is status else None,
                 "error": attempt.error if outcome is status else None},
                attempt.channel, attempt.provider, what, style,
            ))  # fmt: skip
        for receipt in attempt.receipts:
            if self._new("receipt", attempt.id, receipt.receipt_id):
                what = f"receipt {receipt.status.value}"
                if receipt.error or receipt.code:
                    what += f" ({', '.join(x for x in (receipt.code, receipt.error) if x)})"
                style = "red" if receipt.status.value == "failed" else "green"
                lines.append((
                    receipt.ts if self.first else now,
                    {"type": "receipt", "attempt_id": attempt.id, "channel": attempt.channel,
                     "provider": attempt.provider, "status": receipt.status.value,
                     "code": receipt.code, "error": receipt.error},
                    attempt.channel, attempt.provider, what, style,
                ))  # fmt: skip
        return lines

    def scheduled(self, delivery: Delivery) -> None:
        starts = delivery.scheduled_at
        when = starts.isoformat() if starts is not None else None
        self._emit(
            {"type": "scheduled", "delivery_id": delivery.id, "starts_at": when},
            Text.assemble(
                ("scheduled", "bold"),
                f" for {starts:%Y-%m-%d %H:%M %Z}" if starts is not None else "",
                f" · delivery {delivery.id}: a worker on its store starts it then",
            ),
        )

    def finished(self, delivery: Delivery, pending_after: float | None = None) -> None:
        record: dict[str, Any] = {
            "type": "result",
            "delivery_id": delivery.id,
            "status": delivery.status.value,
            "channel": delivery.channel,
            "attempts": len(delivery.attempts),
        }
        if pending_after is not None:
            record["timed_out"] = True
        where = f" on {delivery.channel}" if delivery.channel else ""
        text = Text(f"{delivery.status.value}{where}", style="bold")
        text.append(f" · delivery {delivery.id}")
        if pending_after is not None:
            text.append(f" (still pending after {pending_after:g} s)", style="yellow")
        self._emit(record, text)

    def _new(self, *key: str) -> bool:
        if key in self.seen:
            return False
        self.seen.add(key)
        return True

    def _line(
        self, record: dict[str, Any], ts: float, channel: str, provider: str, what: str, style: str
    ) -> None:
        record = {"type": record.pop("type"), "ts": ts, **record}
        offset = f"+{max(0.0, ts - self.created):.1f}s"
        [line] = aligned(
            [[f"  {offset:>8}", f"{channel:<9}", f"{provider:<16}", Text(what, style=style)]],
            gap=1,
        )
        self._emit(record, line)

    def _emit(self, record: dict[str, Any], text: Text) -> None:
        if self.json:
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
            sys.stdout.flush()
        else:
            out.print(text)


def send(
    text: Annotated[str, typer.Argument(help="The message text.")],
    policy_file: Annotated[Path, typer.Option("--policy", "-p", help="The cascade policy YAML.")],
    policy: Annotated[
        str | None,
        typer.Option("--policy-name", help="Which policy of the file (default: its default)."),
    ] = None,
    recipient_id: Annotated[str, typer.Option("--id", help="The recipient's id.")] = "cli",
    whatsapp: Annotated[
        str | None, typer.Option("--to-whatsapp", help="WhatsApp phone, E.164.")
    ] = None,
    telegram: Annotated[str | None, typer.Option("--to-telegram", help="Telegram chat id.")] = None,
    viber: Annotated[str | None, typer.Option("--to-viber", help="Viber user id.")] = None,
    max_id: Annotated[str | None, typer.Option("--to-max", help="MAX user id.")] = None,
    vk: Annotated[str | None, typer.Option("--to-vk", help="VK user id.")] = None,
    sms: Annotated[str | None, typer.Option("--to-sms", help="SMS phone, E.164.")] = None,
    email: Annotated[str | None, typer.Option("--to-email", help="Email address.")] = None,
    call: Annotated[
        str | None, typer.Option("--to-call", help="Phone for an operator's call task.")
    ] = None,
    app_id: Annotated[
        str | None, typer.Option("--to-app", help="The recipient's id in your own app.")
    ] = None,
    tags: Annotated[
        list[str] | None,
        typer.Option("--tag", help="A tag of the recipient, for routes: (repeatable)."),
    ] = None,
    subject: Annotated[str | None, typer.Option("--subject", help="Subject (email).")] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            help="Send at most once per key: the same key again follows the stored delivery.",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON lines on stdout, one object per event.")
    ] = False,
    timeout: Annotated[
        float, typer.Option(help="Seconds to follow the delivery before leaving it pending.")
    ] = 120.0,
    at: Annotated[str | None, typer.Option(help=AT_HELP)] = None,
) -> None:
    """Send one message by cascade and follow it live: the delivery id at once, then
    each attempt and receipt as it happens. With --at, store it scheduled and return."""
    config = _config(policy_file)
    try:
        start = None if at is None else parse_at(at)
        recipient = Recipient(
            id=recipient_id,
            whatsapp=whatsapp,
            telegram=telegram,
            viber=viber,
            max=max_id,
            vk=vk,
            sms=sms,
            email=email,
            call=call,
            app=app_id,
            tags=frozenset(tags or ()),
        )
        message = Message(text=text, subject=subject)
    except (CascadeError, ValueError) as exc:
        err.print(f"[red]error[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    follower = Follower(json=as_json)
    sent: list[Delivery] = []
    try:
        delivery = asyncio.run(
            _send(
                config, recipient, message, policy, idempotency_key, timeout, follower, sent, start
            )
        )
    except KeyboardInterrupt:
        _interrupted(config, policy_file, sent, as_json)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except CascadeError as exc:  # the store refused (another schema version, say)
        err.print(f"[red]error[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    if start is not None:
        return
    if not delivery.final:
        raise typer.Exit(EXIT_PENDING)
    if delivery.status is not DeliveryStatus.DELIVERED:
        raise typer.Exit(1)


async def _send(
    config: Config,
    recipient: Recipient,
    message: Message,
    policy: str | None,
    key: str | None,
    timeout: float,
    follower: Follower,
    sent: list[Delivery],
    at: datetime | None = None,
) -> Delivery:
    async with Notifier(config, worker=at is None) as notifier:
        try:
            delivery = await notifier.send(
                recipient, message, policy=policy, idempotency_key=key, at=at
            )
        except CascadeError as exc:
            err.print(f"[red]error[/red] {escape(str(exc))}")
            raise typer.Exit(2) from None
        sent.append(delivery)
        if at is not None:  # a worker (`cascade-notify worker`) starts it at its time
            follower.started(delivery)
            follower.scheduled(delivery)
            return delivery
        return await follow(notifier, delivery, follower, timeout)


async def follow(
    notifier: Notifier, delivery: Delivery, follower: Follower, timeout: float
) -> Delivery:
    """Print `delivery` and then what happens to it, until it is final or `timeout`
    seconds of the notifier's clock passed; return it as it then stands."""
    clock = notifier.clock
    news = asyncio.Event()

    def heard(event: Event) -> None:
        if event.delivery_id == delivery.id:
            news.set()

    notifier.subscribe(heard)
    follower.started(delivery)
    deadline = clock.now() + timeout
    while True:
        delivery = await notifier.get(delivery.id)
        follower.update(delivery, clock.now())
        if delivery.final:
            follower.finished(delivery)
            return delivery
        left = deadline - clock.now()
        if left <= 0:
            follower.finished(delivery, pending_after=timeout)
            return delivery
        news.clear()
        # news heard here, or a look at the store now and then (news that reached
        # another process: a receipt taken by `cascade-notify serve`)
        waits = {
            asyncio.ensure_future(news.wait()),
            asyncio.ensure_future(clock.sleep(min(_REREAD, left))),
        }
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()


def _interrupted(config: Config, policy_file: Path, sent: list[Delivery], as_json: bool) -> None:
    if not sent:
        err.print(
            "interrupted before the store answered: the delivery may or may not be stored; "
            "the same command with the same --idempotency-key finds out without sending twice"
        )
        return
    delivery_id = sent[0].id
    where = store_label(config.store)
    if config.store.startswith("memory"):
        said = (
            f"interrupted: delivery {delivery_id} is still pending, but {where} lived in this "
            "process: nothing carries it on"
        )
    else:
        said = (
            f"interrupted: delivery {delivery_id} is still pending in {where}; a worker on that "
            f"store carries it on (`cascade-notify worker -p {policy_file}`)"
        )
    if as_json:
        record = {"type": "interrupted", "delivery_id": delivery_id, "status": "pending"}
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()
    err.print(escape(said))


__all__ = ["EXIT_INTERRUPTED", "EXIT_PENDING", "Follower", "follow", "send"]
