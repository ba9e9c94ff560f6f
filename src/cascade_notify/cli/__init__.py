"""The `cascade-notify` command: demo, send, validate."""

from __future__ import annotations

import asyncio
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cascade_notify._duration import format_duration
from cascade_notify.cli.bounce import bounce
from cascade_notify.cli.breaker import breaker_app
from cascade_notify.cli.emulate import emulate
from cascade_notify.cli.serve import serve
from cascade_notify.cli.simulate import simulate
from cascade_notify.cli.store import store_app
from cascade_notify.cli.worker import worker
from cascade_notify.errors import CascadeError, PolicyError
from cascade_notify.models import Delivery, DeliveryStatus, Message, Recipient
from cascade_notify.notifier import Notifier
from cascade_notify.policy import Config, load_config

app = typer.Typer(
    name="cascade-notify",
    help="Deliver service messages by cascade: WhatsApp → Telegram → Viber → SMS → email → call.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)

PolicyOption = Annotated[Path, typer.Option("--policy", "-p", help="The cascade policy YAML.")]


def _bundled_demo() -> str:
    return resources.files("cascade_notify.cli").joinpath("demo.yaml").read_text(encoding="utf-8")


def _load(source: str | Path) -> Config:
    try:
        return load_config(source)
    except PolicyError as exc:
        for issue in exc.issues:
            errors.print(f"[red]error[/red] {issue}")
        raise typer.Exit(1) from None


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="The policy file to check.")],
) -> None:
    """Check a policy file; print every error with its line and field."""
    if not file.is_file():
        errors.print(f"[red]error[/red] {file}: no such file")
        raise typer.Exit(1)
    config = _load(file)
    console.print(
        f"[green]ok[/green] {file}: {len(config.providers)} providers, "
        f"{len(config.policies)} {'policy' if len(config.policies) == 1 else 'policies'}"
    )
    for policy in config.policies.values():
        chain = " → ".join(step.channel for step in policy.steps)
        marker = " (default)" if policy.name == config.default_policy else ""
        console.print(f"  {policy.name}{marker}: {chain}; ttl {format_duration(policy.ttl)}")


@app.command()
def send(
    text: Annotated[str, typer.Argument(help="The message text.")],
    policy_file: PolicyOption,
    policy: Annotated[str | None, typer.Option("--policy-name", help="Policy to use.")] = None,
    recipient_id: Annotated[str, typer.Option("--id", help="The recipient's id.")] = "cli",
    whatsapp: Annotated[str | None, typer.Option("--to-whatsapp")] = None,
    telegram: Annotated[str | None, typer.Option("--to-telegram")] = None,
    viber: Annotated[str | None, typer.Option("--to-viber")] = None,
    sms: Annotated[str | None, typer.Option("--to-sms")] = None,
    email: Annotated[str | None, typer.Option("--to-email")] = None,
    call: Annotated[str | None, typer.Option("--to-call")] = None,
    app_id: Annotated[str | None, typer.Option("--to-app")] = None,
    subject: Annotated[str | None, typer.Option("--subject")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the outcome.")] = 120.0,
) -> None:
    """Send one message by cascade and print what happened."""
    config = _load(policy_file)
    try:
        recipient = Recipient(
            id=recipient_id,
            whatsapp=whatsapp,
            telegram=telegram,
            viber=viber,
            sms=sms,
            email=email,
            call=call,
            app=app_id,
        )
        message = Message(text=text, subject=subject)
    except CascadeError as exc:
        errors.print(f"[red]error[/red] {exc}")
        raise typer.Exit(2) from None
    delivery = asyncio.run(_send(config, recipient, message, policy, timeout))
    _print_delivery(delivery, recipient)
    if delivery.status is not DeliveryStatus.DELIVERED:
        raise typer.Exit(1)


async def _send(
    config: Config, recipient: Recipient, message: Message, policy: str | None, timeout: float
) -> Delivery:
    async with Notifier(config) as notifier:
        try:
            delivery = await notifier.send(recipient, message, policy=policy)
        except CascadeError as exc:
            errors.print(f"[red]error[/red] {exc}")
            raise typer.Exit(2) from None
        try:
            return await notifier.wait(delivery.id, timeout=timeout)
        except TimeoutError:
            errors.print(f"[yellow]still pending after {timeout:g} s[/yellow]")
            return await notifier.get(delivery.id)


def _print_delivery(delivery: Delivery, recipient: Recipient) -> None:
    start = delivery.created_ts
    for skip in delivery.skipped:
        console.print(f"  skipped {skip.channel}: {skip.detail or skip.reason}")
    for attempt in delivery.attempts:
        line = (
            f"  +{attempt.started_ts - start:6.1f}s {attempt.channel:<9} {attempt.provider:<16}"
            f" {attempt.status.value}"
        )
        if attempt.error:
            line += f" ({attempt.error})"
        console.print(line)
    where = f" on {delivery.channel}" if delivery.channel else ""
    console.print(f"[bold]{delivery.status.value}{where}[/bold] · delivery {delivery.id}")


@app.command()
def demo(
    policy_file: Annotated[
        Path | None, typer.Option("--policy", "-p", help="Run another demo policy.")
    ] = None,
) -> None:
    """Watch three deliveries find their way through outages, on fake providers."""
    from cascade_notify.cli.demo import run_demo

    source = str(policy_file) if policy_file else _bundled_demo()
    run_demo(_load(source), console)


app.command()(serve)
app.command()(emulate)
app.command()(bounce)
app.command()(worker)
app.command()(simulate)
app.add_typer(store_app, name="store")
app.add_typer(breaker_app, name="breaker")


def main() -> None:
    app()
