"""`cascade-notify simulate`: table, --compare, --json, --chart, errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from typer.testing import CliRunner

from cascade_notify.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "examples" / "scenarios" / "parcel-policy.yaml"
BARE = ROOT / "examples" / "scenarios" / "parcel-policy-no-breaker.yaml"

SCENARIO = """\
name: a silent hour
traffic: {deliveries: 120, window: 2h, start: 2021-10-04T15:00:00Z}
segments:
  - {name: all, share: 1, channels: [whatsapp, sms, call], reads: 0}
channels: {whatsapp: {delivered: 2s}, sms: {delivered: 10s, lost: 0.1}, call: {delivered: 30m}}
outages: [{channel: whatsapp, after: 30m, duration: 1h, fails: silent}]
prices: {whatsapp: 0.01, sms: 0.05, call: 1}
currency: EUR
"""


def _scenario(tmp_path: Path) -> Path:
    path = tmp_path / "silent.yaml"
    path.write_text(SCENARIO)
    return path


def test_simulate_prints_the_table(tmp_path):
    result = runner.invoke(app, ["simulate", str(POLICY), "-s", str(_scenario(tmp_path))])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "a silent hour" in out and "time to delivery p95" in out and "calls created" in out
    assert "breaker saved: cost" in out


def test_compare_and_json_are_the_api_report(tmp_path):
    args = ["simulate", str(POLICY), "-s", str(_scenario(tmp_path)), "--seed", "5"]
    result = runner.invoke(app, [*args, "--compare", str(BARE), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["seed"] == 5 and data["currency"] == "EUR"
    guarded, bare = data["policies"]
    assert (guarded["label"], bare["label"]) == ("parcel-policy.yaml", BARE.name)
    assert guarded["deliveries"] == bare["deliveries"] == 120
    assert guarded["cost"] < bare["cost"]
    assert guarded["calls_created"] == next(
        c["sends"] for c in guarded["channels"] if c["channel"] == "call"
    )
    again = runner.invoke(app, [*args, "--compare", str(BARE), "--json"])
    assert json.loads(again.output) == data


def test_chart_writes_a_png(tmp_path):
    chart = tmp_path / "ttd.png"
    args = ["simulate", str(POLICY), "-s", str(_scenario(tmp_path)), "--no-baseline"]
    result = runner.invoke(app, [*args, "--compare", str(BARE), "--chart", str(chart)])
    assert result.exit_code == 0, result.output
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chart_without_matplotlib_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    chart = tmp_path / "ttd.png"
    args = ["simulate", str(POLICY), "-s", str(_scenario(tmp_path)), "--no-baseline"]
    result = runner.invoke(app, [*args, "--chart", str(chart)])
    assert result.exit_code == 1
    assert "cascade-notify[charts]" in result.output and not chart.exists()


def test_a_bad_scenario_is_refused_with_its_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("traffic: {deliveries: 10, window: 1h}\nsegments: []\n")
    result = runner.invoke(app, ["simulate", str(POLICY), "-s", str(path)])
    assert result.exit_code == 1
    assert f"{path}:2" in result.output and "segments" in result.output


def test_a_policy_with_unset_secrets_still_simulates(tmp_path, monkeypatch):
    """A production policy's ${TOKEN}s need not be set: no real API is called."""
    monkeypatch.delenv("SIM_TEST_TOKEN", raising=False)
    policy = tmp_path / "prod.yaml"
    policy.write_text(
        "providers:\n"
        "  mail: {type: smtp, host: smtp.example.com, from_addr: a@example.com,"
        " username: u, password: '${SIM_TEST_TOKEN}'}\n"
        "  sms: {type: fake, channel: sms}\n"
        "policies:\n"
        "  p: {steps: [{channel: email, providers: [mail], wait_for: accepted},"
        " {channel: sms, providers: [sms]}]}\n"
    )
    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        "traffic: {deliveries: 5, window: 10m}\n"
        "segments: [{name: a, share: 1, channels: [email, sms]}]\n"
    )
    result = runner.invoke(app, ["simulate", str(policy), "-s", str(scenario), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["policies"][0]["delivered"] == 5
