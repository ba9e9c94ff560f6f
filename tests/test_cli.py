"""The command line: validate, demo, send."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cascade_notify.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent

BROKEN = """\
providers:
  wa: {type: fake, channel: whatsapp}
  tg: {type: telegram_bott}
  sms: {type: fake, channel: sms}
policies:
  service:
    steps:
      - channel: whatsapp
        providers: [wa]
        wiat_for: delivered
      - channel: telegram
        providers: [sms]
      - channel: sms
        providers: [nope]
        timeout: -5s
"""


def test_validate_prints_every_error_with_line_and_field(tmp_path):
    """A broken policy: each error printed with file:line and field path; exit code 1."""
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    out = result.output
    assert f"{path}:3:" in out and "providers.tg.type" in out and "telegram_bott" in out
    assert f"{path}:10:" in out and "wiat_for" in out
    assert f"{path}:12:" in out and "sends on sms" in out
    assert f"{path}:14:" in out and "'nope'" in out
    assert f"{path}:15:" in out and "timeout" in out


def test_validate_accepts_a_good_policy():
    """The bundled demo policy validates and the chain is printed."""
    result = runner.invoke(app, ["validate", str(ROOT / "examples" / "demo.yaml")])
    assert result.exit_code == 0, result.output
    assert "whatsapp → telegram → viber → sms → call" in result.output


def test_validate_missing_file():
    """A path that does not exist is a clear error, not a traceback."""
    result = runner.invoke(app, ["validate", "/nonexistent/cascade.yaml"])
    assert result.exit_code == 1
    assert "no such file" in result.output


def test_demo_tells_the_story():
    """The demo ends each delivery where the story says, on fake time."""
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "⇒ delivered on viber" in out
    assert "⇒ delivered on call" in out
    assert "⇒ delivered on whatsapp after 4s" in out
    assert "Forbidden: bot was blocked by the user" in out


def test_send_from_the_command_line(tmp_path):
    """`send` runs one cascade and prints its outcome."""
    path = tmp_path / "p.yaml"
    path.write_text("""
store: memory://
providers:
  wa: {type: fake, channel: whatsapp, behavior: unreachable}
  sms: {type: fake, channel: sms}
policies:
  p: {steps: [{channel: whatsapp, providers: [wa]}, {channel: sms, providers: [sms]}]}
""")
    result = runner.invoke(
        app,
        [
            "send",
            "--policy",
            str(path),
            "--to-whatsapp",
            "+79161234567",
            "--to-sms",
            "+79161234567",
            "Hello",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "unreachable" in result.output
    assert "delivered on sms" in result.output


def test_send_rejects_a_bad_number(tmp_path):
    """An invalid number is reported by field, and nothing is sent."""
    path = tmp_path / "p.yaml"
    path.write_text(
        "store: memory://\n"
        "providers: {s: {type: fake, channel: sms}}\n"
        "policies: {p: {steps: [{channel: sms, providers: [s]}]}}\n"
    )
    result = runner.invoke(app, ["send", "--policy", str(path), "--to-sms", "+7 12", "Hi"])
    assert result.exit_code == 2
    assert "Recipient.sms" in result.output


def test_validate_masks_the_credentials_of_a_rejected_url(tmp_path):
    """A webhook URL refused by `validate` is shown with its password and query (where
    tokens travel) masked: the output goes to terminals and CI logs."""
    path = tmp_path / "secret.yaml"
    path.write_text(
        "providers:\n"
        "  app: {type: webhook, url: 'ftp://bot:hunter2@example.com/hook?token=abc123',\n"
        "        secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}\n"
        "policies:\n"
        "  p: {steps: [{channel: app, providers: [app], wait_for: accepted}]}\n"
    )
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    out = " ".join(result.output.split())
    assert "ftp://bot:***@example.com/hook?token=***" in out
    assert "hunter2" not in out and "abc123" not in out
