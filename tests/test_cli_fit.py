"""The command line, fit for people and for scripts: lines that scripts can read, live
`send`, `--version`, help on every option, no stray warnings, one log format."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from cascade_notify import Message, Notifier, Recipient
from cascade_notify.cli import app
from cascade_notify.cli._output import LOG_FORMAT, aligned
from cascade_notify.cli.send import Follower, follow
from cascade_notify.stores import MemoryStore
from cascade_notify.testing import FakeClock

runner = CliRunner()

SMS_POLICY = """\
store: memory://
providers:
  wa: {type: fake, channel: whatsapp, behavior: unreachable}
  sms: {type: fake, channel: sms, receipt_delay: 5s}
policies:
  p: {steps: [{channel: whatsapp, providers: [wa]}, {channel: sms, providers: [sms]}]}
"""


def _policy(tmp_path: Path, text: str = SMS_POLICY) -> str:
    path = tmp_path / "cascade.yaml"
    path.write_text(text)
    return str(path)


def test_validate_prints_one_error_per_line_to_a_script(tmp_path: Path) -> None:
    """Not on a terminal, each error is one line however long (no wrapping at 80
    columns), and no line ends in spaces."""
    long_name = "a_provider_with_a_long_name_to_push_the_line_past_eighty_columns"
    path = tmp_path / "broken.yaml"
    path.write_text(
        "providers:\n"
        f"  {long_name}: {{type: telegram_bott}}\n"
        "  sms: {type: fake, channel: sms}\n"
        "policies:\n"
        "  p: {steps: [{channel: sms, providers: [sms, nope_not_there], wiat_for: x}]}\n"
    )
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 3, lines
    assert all(line.startswith(f"error {path}:") for line in lines), lines
    assert any(long_name in line and "telegram_bott" in line for line in lines)
    assert max(len(line) for line in lines) > 80
    assert all(line == line.rstrip() for line in lines)


def test_version() -> None:
    """`cascade-notify --version` prints the installed version."""
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"cascade-notify {metadata.version('cascade-notify')}"


def _commands(command: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every command under `command` (typer's own click, or click: whichever it uses)."""
    found = [(path, command)]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        found.extend(_commands(sub, (*path, name)))
    return found


def test_every_option_and_argument_has_help() -> None:
    """Walking every command of the app: each option and argument says what it is for,
    and each command has a help text."""
    root = typer.main.get_command(app)
    missing = []
    commands = _commands(root)
    assert len(commands) > 12  # the walk found the groups' commands too
    for path, command in commands:
        name = " ".join(("cascade-notify", *path))
        if not (command.help or "").strip():
            missing.append(f"{name}: the command")
        for param in command.params:
            if param.name == "help":
                continue
            text = getattr(param, "help", None)
            if not (text or "").strip():
                missing.append(f"{name}: {param.opts[0]}")
    assert not missing, "no help text for:\n" + "\n".join(missing)


async def test_send_follows_the_delivery_live(capsys: pytest.CaptureFixture[str]) -> None:
    """The delivery id comes first, at once; then each attempt and receipt as it
    happens, the time column saying when (the receipt 5 s after the send)."""
    clock = FakeClock()
    async with Notifier.from_yaml(SMS_POLICY, clock=clock) as notifier:
        delivery = await notifier.send(
            Recipient(id="a", whatsapp="+79161234567", sms="+79161234567"), Message(text="hi")
        )
        task = asyncio.create_task(follow(notifier, delivery, Follower(json=False), 60))
        await clock.advance(0)
        first = capsys.readouterr().out.splitlines()
        assert first[0] == f"delivery {delivery.id} pending (policy p)"
        assert not any("receipt" in line for line in first)
        await clock.advance(5)
        final = await task
    assert final.status.value == "delivered"
    lines = [line.split() for line in (first + capsys.readouterr().out.splitlines())[1:]]
    assert lines == [
        ["+0.0s", "whatsapp", "wa", "unreachable", *lines[0][4:]],
        ["+0.0s", "sms", "sms", "accepted"],
        ["+5.0s", "sms", "sms", "receipt", "delivered"],
        ["delivered", "on", "sms", "·", "delivery", delivery.id],
    ]


async def test_send_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """`--json`: one JSON object per line: the delivery, each event, the result."""
    clock = FakeClock()
    async with Notifier.from_yaml(SMS_POLICY, clock=clock) as notifier:
        delivery = await notifier.send(Recipient(id="a", sms="+79161234567"), Message(text="hi"))
        task = asyncio.create_task(follow(notifier, delivery, Follower(json=True), 60))
        await clock.advance(5)
        await task
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["type"] for r in records] == ["delivery", "skipped", "attempt", "receipt", "result"]
    assert records[0]["delivery_id"] == delivery.id
    assert records[3]["status"] == "delivered"
    assert records[3]["ts"] - records[0]["ts"] == pytest.approx(5)
    assert records[-1] == {
        "type": "result",
        "delivery_id": delivery.id,
        "status": "delivered",
        "channel": "sms",
        "attempts": 1,
    }


def test_send_with_an_idempotency_key_sends_once(tmp_path: Path) -> None:
    """The same --idempotency-key twice: one delivery, followed again the second time."""
    path = _policy(
        tmp_path,
        f"store: sqlite:///{tmp_path / 'c.db'}\n"
        "providers: {sms: {type: fake, channel: sms}}\n"
        "policies: {p: {steps: [{channel: sms, providers: [sms]}]}}\n",
    )
    args = ["send", "-p", path, "--to-sms", "+79161234567", "--idempotency-key", "k-1", "--json"]
    first = runner.invoke(app, [*args, "Hello"])
    again = runner.invoke(app, [*args, "Hello"])
    assert first.exit_code == 0 and again.exit_code == 0, first.output + again.output
    one, two = (json.loads(r.stdout.splitlines()[-1]) for r in (first, again))
    assert one["delivery_id"] == two["delivery_id"]
    assert json.loads(again.stdout.splitlines()[0])["status"] == "delivered"


def test_send_interrupted_says_the_delivery_is_pending_for_the_worker(tmp_path: Path) -> None:
    """Ctrl-C while waiting: the delivery id, that it is still pending in the store, and
    that a worker there carries it on; exit 130."""
    path = _policy(
        tmp_path,
        f"store: sqlite:///{tmp_path / 'c.db'}\n"
        "providers: {sms: {type: fake, channel: sms, receipt_delay: 1h}}\n"
        "policies: {p: {steps: [{channel: sms, providers: [sms]}]}}\n",
    )
    command = Path(sys.executable).with_name("cascade-notify")
    process = subprocess.Popen(
        [command, "send", "-p", path, "--to-sms", "+79161234567", "--json", "Hi"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell's background job ignores SIGINT, and a child inherits that: not a user's
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert process.stdout is not None
        started = json.loads(process.stdout.readline())
        assert started["type"] == "delivery"
        deadline = time.monotonic() + 20
        while json.loads(process.stdout.readline())["type"] != "attempt":
            assert time.monotonic() < deadline
        process.send_signal(signal.SIGINT)
        rest, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, stderr
    assert json.loads(rest.splitlines()[-1]) == {
        "type": "interrupted",
        "delivery_id": started["delivery_id"],
        "status": "pending",
    }
    said = " ".join(stderr.split())
    assert f"delivery {started['delivery_id']} is still pending in sqlite:///" in said
    assert "a worker on that store carries it on" in said
    assert "Traceback" not in stderr


async def test_cancel_is_no_lost_lease(caplog: pytest.LogCaptureFixture) -> None:
    """Cancelling a delivery while the worker has it in hand (mid-request) logs no
    warning that its lease was taken over: it was cancelled, as asked."""
    clock = FakeClock()
    policy = (
        "store: memory://\n"
        "providers: {sms: {type: fake, channel: sms, latency: 2s}}\n"
        "policies: {p: {steps: [{channel: sms, providers: [sms]}]}}\n"
    )
    with caplog.at_level(logging.INFO, logger="cascade_notify"):
        async with Notifier.from_yaml(policy, clock=clock) as notifier:
            delivery = await notifier.send(Recipient(id="a", sms="+79161234567"), Message(text="x"))
            await clock.advance(1)
            await notifier.cancel(delivery.id)
            await clock.advance(2)
            assert (await notifier.get(delivery.id)).status.value == "cancelled"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "was cancelled while in hand" in caplog.text


BREAKER_POLICY = """\
store: postgresql://db/cascade
providers:
  whatsapp_cloud: {type: fake, channel: whatsapp}
  sms: {type: fake, channel: sms}
policies:
  p: {steps: [{channel: whatsapp, providers: [whatsapp_cloud]}, {channel: sms, providers: [sms]}]}
"""


def test_breaker_commands_print_no_stray_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`breaker open`, `list` and `close` print their table and nothing else: the state a
    command learns from the store, or changes by hand, is not logged as a warning."""
    store = MemoryStore()  # one store behind the URL, as a database is to processes
    monkeypatch.setattr("cascade_notify.notifier.open_store", lambda url: store)
    path = _policy(tmp_path, BREAKER_POLICY)
    for args in (
        ["open", "whatsapp_cloud", "--for", "1h", "--reason", "blocked"],
        ["list"],
        ["close", "whatsapp_cloud"],
        ["list"],
    ):
        result = runner.invoke(app, ["breaker", *args, "-p", path])
        assert result.exit_code == 0, result.output
        assert result.stderr == "", (args, result.stderr)
        lines = result.stdout.splitlines()
        assert lines[0].split() == ["provider", "state", "until", "reason"]
        assert all(line == line.rstrip() for line in lines)
    assert "closed by hand" in result.stdout


def test_aligned_measures_terminal_cells() -> None:
    """Columns line up by terminal cells: a double-width glyph takes two."""
    lines = [t.plain for t in aligned([["⌛", "x", "tail "], ["✓", "yy", "t"]])]
    assert lines == ["⌛  x   tail", "✓   yy  t"]


def test_one_log_format(tmp_path: Path) -> None:
    """`worker` logs in the format every command uses (time, level, logger: message)."""
    path = _policy(
        tmp_path,
        f"store: sqlite:///{tmp_path / 'c.db'}\n"
        "providers: {sms: {type: fake, channel: sms}}\n"
        "policies: {p: {steps: [{channel: sms, providers: [sms]}]}}\n",
    )
    command = Path(sys.executable).with_name("cascade-notify")
    process = subprocess.Popen(
        [command, "worker", "-p", path],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        process.send_signal(signal.SIGTERM)
        rest = process.communicate(timeout=20)[1]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, rest
    pattern = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (INFO|WARNING|ERROR) [\w.]+: \S")
    for line in [first, *rest.splitlines()]:
        assert pattern.match(line), line
    assert LOG_FORMAT.startswith("%(asctime)s %(levelname)s %(name)s:")
    assert f"on sqlite:///{tmp_path / 'c.db'}" in first


async def test_send_leaves_a_delivery_pending_after_its_timeout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Past `--timeout` the last line says the delivery is still pending (the command
    then exits 3, and the delivery goes on in the store)."""
    clock = FakeClock()
    async with Notifier.from_yaml(SMS_POLICY, clock=clock) as notifier:
        delivery = await notifier.send(Recipient(id="a", sms="+79161234567"), Message(text="hi"))
        task = asyncio.create_task(follow(notifier, delivery, Follower(json=True), 2))
        await clock.advance(3)
        final = await task
    assert not final.final
    last = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert last == {
        "type": "result",
        "delivery_id": delivery.id,
        "status": "pending",
        "channel": None,
        "attempts": 1,
        "timed_out": True,
    }
