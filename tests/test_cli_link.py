"""`cascade-notify link`: a customer's deep link, and its QR code, from the command line."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cascade_notify.cli import app
from cascade_notify.linking import verify

runner = CliRunner()
SECRET = "cli-test-link-secret-0123456789abcdef"
POLICY = f"""
links: {{secret: "{SECRET}"}}
providers:
  tg: {{type: telegram_bot, token: "123:abc", username: acme_notify_bot}}
  sms: {{type: fake, channel: sms}}
policies:
  service:
    steps:
      - {{channel: telegram, providers: [tg], wait_for: accepted}}
      - {{channel: sms, providers: [sms]}}
"""


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "cascade.yaml"
    path.write_text(POLICY, encoding="utf-8")
    return path


def test_link_prints_the_deep_link(policy: Path) -> None:
    """The link for the recipient, alone on its line: its token verifies for telegram and
    names the recipient, and lives as long as --ttl says."""
    result = runner.invoke(app, ["link", "telegram", "anna", "-p", str(policy), "--ttl", "2h"])
    assert result.exit_code == 0, result.output
    found = re.fullmatch(r"https://t\.me/acme_notify_bot\?start=([A-Za-z0-9_-]+)\n", result.output)
    assert found
    claim = verify((SECRET.encode(),), channel="telegram", payload=found[1], now=time.time())
    assert claim.recipient_id == "anna"
    assert claim.expires_ts == pytest.approx(time.time() + 7200, abs=5)


def test_link_with_qr_draws_a_code_above_the_link(policy: Path) -> None:
    """--qr: a QR code in block characters, then the link."""
    result = runner.invoke(app, ["link", "telegram", "anna", "-p", str(policy), "--qr"])
    assert result.exit_code == 0, result.output
    *code, last = result.output.rstrip("\n").split("\n")
    assert last.startswith("https://t.me/acme_notify_bot?start=")
    assert len(code) > 10 and all(set(line) <= set("█▀▄ ") for line in code)


def test_qr_without_the_extra_says_which_to_install(
    policy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without segno the command fails naming the `qr` extra, and prints no link."""
    monkeypatch.setitem(sys.modules, "segno", None)
    result = runner.invoke(app, ["link", "telegram", "anna", "-p", str(policy), "--qr"])
    assert result.exit_code == 1
    assert "cascade-notify[qr]" in result.output and "https://" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["link", "sms", "anna"], "no provider on channel 'sms' makes deep links"),
        (["link", "telegram", "x" * 40], "holds at most 26"),
        (["link", "telegram", "anna", "--ttl", "soon"], "--ttl"),
    ],
)
def test_link_errors_are_one_line_and_exit_non_zero(
    policy: Path, args: list[str], message: str
) -> None:
    """A channel without a linking bot, an id too long, a bad ttl: an error, no link."""
    result = runner.invoke(app, [*args, "-p", str(policy)])
    assert result.exit_code != 0
    assert message in result.output.replace("\n", "") and "https://" not in result.output
