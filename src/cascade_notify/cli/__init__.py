"""The `cascade-notify` command: demo, send, validate."""

from __future__ import annotations

from importlib import metadata, resources
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from cascade_notify._duration import format_duration
from cascade_notify.cli._output import err, out, setup_logging
from cascade_notify.cli.bounce import bounce
from cascade_notify.cli.breaker import breaker_app
from cascade_notify.cli.bulk import send_many
from cascade_notify.cli.calls import calls_app
from cascade_notify.cli.emulate import emulate
from cascade_notify.cli.link import link
from cascade_notify.cli.observe import deliveries, stats, status
from cascade_notify.cli.send import send
from cascade_notify.cli.serve import serve
from cascade_notify.cli.simulate import simulate
from cascade_notify.cli.store import store_app
from cascade_notify.cli.worker import worker
from cascade_notify.errors import PolicyError
from cascade_notify.policy import Config, load_config

app = typer.Typer(
    name="cascade-notify",
    help="Deliver service messages by cascade: WhatsApp → Telegram → Viber → SMS → email → call.",
    no_args_is_help=True,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cascade-notify {metadata.version('cascade-notify')}")
        raise typer.Exit


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    # warnings and errors of every command in one format; worker and serve take a level
    setup_logging("warning")


def _bundled_demo() -> str:
    return resources.files("cascade_notify.cli").joinpath("demo.yaml").read_text(encoding="utf-8")


def _load(source: str | Path) -> Config:
    try:
        return load_config(source)
    except PolicyError as exc:
        for issue in exc.issues:
            # one line each, whatever the message holds: scripts read them line by line
            err.print(f"[red]error[/red] {escape(' '.join(str(issue).split()))}")
        raise typer.Exit(1) from None


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="The policy file to check.")],
) -> None:
    """Check a policy file; print every error and warning with its line and field."""
    if not file.is_file():
        err.print(f"[red]error[/red] {escape(str(file))}: no such file")
        raise typer.Exit(1)
    config = _load(file)
    for warning in config.warnings:
        # one line each off a terminal, as the errors
        err.print(f"[yellow]warning[/yellow] {escape(' '.join(str(warning).split()))}")
    out.print(
        f"[green]ok[/green] {escape(str(file))}: {len(config.providers)} providers, "
        f"{len(config.policies)} {'policy' if len(config.policies) == 1 else 'policies'}"
    )
    for policy in config.policies.values():
        chain = " → ".join(step.channel for step in policy.steps)
        marker = " (default)" if policy.name == config.default_policy else ""
        if policy.order == "learned":  # the steps as written; pinned ones marked
            pinned = {s.channel for s in policy.steps if s.keep_place}
            chain = " → ".join(
                s.channel + ("*" if s.channel in pinned else "") for s in policy.steps
            )
            chain += "; order learned" + (" (* keeps its place)" if pinned else "")
        out.print(f"  {escape(policy.name)}{marker}: {chain}; ttl {format_duration(policy.ttl)}")
    for rule in config.routes:  # first match wins
        out.print(f"  {escape(rule.route.describe())} → {escape(rule.policy)}")


@app.command()
def demo(
    policy_file: Annotated[
        Path | None, typer.Option("--policy", "-p", help="Run another demo policy.")
    ] = None,
) -> None:
    """Watch three deliveries find their way through outages, on fake providers; then the
    2021 WhatsApp outage simulated, cut down, under a fixed and a learned channel order."""
    from cascade_notify.cli.demo import run_demo

    bundled = _bundled_demo()
    source = policy_file.read_text(encoding="utf-8") if policy_file else bundled
    # the titles tell the bundled policy's stories; another policy plays another scenario
    run_demo(_load(str(policy_file) if policy_file else bundled), stories=source == bundled)


app.command()(send)
app.command()(serve)
app.command()(emulate)
app.command()(bounce)
app.command()(link)
app.command()(worker)
app.command("send-many")(send_many)
app.command()(status)
app.command()(deliveries)
app.command()(stats)
app.command()(simulate)
app.add_typer(store_app, name="store")
app.add_typer(breaker_app, name="breaker")
app.add_typer(calls_app, name="calls")


def main() -> None:
    app()
