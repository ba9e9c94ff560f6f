"""Policy warnings: doubtful but not wrong, each with its file, line and column; the file
is still used (issue 13: the country brake left off, a WhatsApp step with no template)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cascade_notify.cli import app
from cascade_notify.policy import load_config

WA = """\
providers:
  wa:
    type: whatsapp_cloud
    phone_number_id: "1"
    access_token: t
    app_secret: s
    verify_token: v
  sms: {type: fake, channel: sms}
"""


def test_no_country_brake_on_an_sms_step_is_a_warning() -> None:
    """An sms step with neither sender_country nor allowed_countries: one warning at the
    policy's key, saying the brake is off and how to set it."""
    config = load_config(WA + "policies:\n  p:\n    steps: [{channel: sms, providers: [sms]}]\n")
    (warning,) = config.warnings
    assert (warning.path, warning.line, warning.column) == ("policies.p", 10, 3)
    assert "country brake is off" in warning.message
    assert "sender_country" in warning.message and "allowed_countries" in warning.message


def test_sender_country_or_allowed_countries_silence_it() -> None:
    """Either key turns the brake on, and the warning off; a policy with no sms or call
    step has nothing to brake."""
    steps = "    steps: [{channel: sms, providers: [sms]}]\n"
    assert load_config("sender_country: RU\n" + WA + "policies:\n  p:\n" + steps).warnings == ()
    braked = "policies:\n  p:\n    brakes: {allowed_countries: [KZ]}\n" + steps
    assert load_config(WA + braked).warnings == ()
    only_wa = "policies:\n  p:\n    steps:\n      - channel: whatsapp\n        providers: [wa]\n"
    only_wa += "        options: {wa: {template: parcel_arrived}}\n"
    assert load_config(WA + only_wa).warnings == ()


def test_a_whatsapp_step_with_no_template_is_a_warning() -> None:
    """A whatsapp_cloud step naming no template: a warning at the provider in the step,
    about the 24-hour window and how to name one."""
    text = (
        "sender_country: RU\n"
        + WA
        + ("policies:\n  p:\n    steps:\n      - channel: whatsapp\n        providers: [wa]\n")
    )
    (warning,) = load_config(text).warnings
    assert (warning.path, warning.line) == ("policies.p.steps[0].providers[0]", 14)
    assert "names no template" in warning.message and "24 hours" in warning.message
    assert str(warning).startswith("<policy>:14:")


def test_validate_prints_warnings_and_passes(tmp_path: Path) -> None:
    """`validate` prints each warning on a line of its own like an error, and exits 0."""
    path = tmp_path / "cascade.yaml"
    path.write_text(
        WA + "policies:\n  p:\n    steps:\n      - {channel: whatsapp, providers: [wa]}\n"
        "      - {channel: sms, providers: [sms]}\n"
    )
    result = CliRunner().invoke(app, ["validate", str(path)], terminal_width=400)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("warning ")]
    assert len(lines) == 2
    assert lines[0].startswith(f"warning {path}:10:3: policies.p: the SMS-fraud country brake")
    assert lines[1].startswith(f"warning {path}:12:41: policies.p.steps[0].providers[0]: 'wa'")
    assert "ok " in result.output
