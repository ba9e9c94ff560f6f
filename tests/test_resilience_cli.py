"""`breaker list|open|close` on the command line (mounted as `cascade-notify breaker`)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cascade_notify import Message, Notifier, Recipient
from cascade_notify.cli.breaker import breaker_app
from cascade_notify.stores import MemoryStore
from cascade_notify.testing import FakeClock, run_until_final

runner = CliRunner()

POLICY = """\
providers:
  whatsapp_cloud: {type: fake, channel: whatsapp}
  telegram_bot: {type: fake, channel: telegram}
policies:
  service:
    steps:
      - {channel: whatsapp, providers: [whatsapp_cloud]}
      - {channel: telegram, providers: [telegram_bot], wait_for: accepted}
"""


@pytest.fixture
def policy(tmp_path: Path) -> str:
    path = tmp_path / "cascade.yaml"
    path.write_text("store: memory://\n" + POLICY)
    return str(path)


@pytest.fixture
def shared(monkeypatch: pytest.MonkeyPatch, policy: str) -> MemoryStore:
    """One store object behind the policy's store URL, as a database is to separate
    processes: it stands in for a SQL store that shares guard state."""
    store = MemoryStore()
    monkeypatch.setattr("cascade_notify.notifier.open_store", lambda url: store)
    Path(policy).write_text("store: postgresql://db/cascade\n" + POLICY)
    return store


def test_list_shows_every_breaker(policy: str) -> None:
    """`breaker list` shows each provider's breaker, and says when no worker shares them."""
    result = runner.invoke(breaker_app, ["list", "--policy", policy])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["provider", "state", "until", "reason"]
    assert [line.split()[:2] for line in lines[1:]] == [
        ["telegram_bot", "closed"],
        ["whatsapp_cloud", "closed"],
    ]
    assert "does not share breaker state between processes" in result.stderr


def test_open_refuses_a_store_that_shares_nothing(policy: str) -> None:
    """With memory:// another process's breaker cannot be reached: say so, change nothing."""
    result = runner.invoke(breaker_app, ["open", "whatsapp_cloud", "--for", "2h", "-p", policy])
    assert result.exit_code == 1
    assert "does not share breaker state between processes" in result.output


def test_open_and_close_reach_a_running_worker(policy: str, shared: MemoryStore) -> None:
    """A breaker opened from the command line stops a worker on the store; closed, it doesn't."""
    result = runner.invoke(
        breaker_app,
        ["open", "whatsapp_cloud", "--for", "2h", "--reason", "blocked", "-p", policy],
    )
    assert result.exit_code == 0, result.output
    assert "open (by hand)" in result.output and "blocked" in result.output
    listed = runner.invoke(breaker_app, ["list", "-p", policy])
    assert "whatsapp_cloud  open (by hand)" in listed.output

    async def deliver() -> str | None:
        clock = FakeClock(start=time.time())  # the command line wrote on the wall clock
        async with Notifier.from_yaml(policy, clock=clock, store=shared) as notifier:
            anna = Recipient(id="anna", whatsapp="+79161234567", telegram="1")
            sent = await notifier.send(anna, Message(text="hi"))
            [done] = await run_until_final(notifier, clock, [sent.id])
            return done.channel

    assert asyncio.run(deliver()) == "telegram"
    closed = runner.invoke(breaker_app, ["close", "whatsapp_cloud", "-p", policy])
    assert closed.exit_code == 0 and "closed by hand" in closed.output
    assert asyncio.run(deliver()) == "whatsapp"


def test_unknown_provider_and_bad_duration(policy: str, shared: MemoryStore) -> None:
    """A provider the policy does not define, or a duration that is not one, is an error."""
    unknown = runner.invoke(breaker_app, ["close", "whatsap", "-p", policy])
    assert unknown.exit_code == 1
    assert "no provider named 'whatsap'" in unknown.output
    bad = runner.invoke(breaker_app, ["open", "whatsapp_cloud", "--for", "soon", "-p", policy])
    assert bad.exit_code == 2 and "--for" in bad.output
