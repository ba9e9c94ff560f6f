"""`simulate`: figures checked by hand on small scenarios, determinism, the breaker's
saving, located scenario errors, and the bundled examples."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from cascade_notify.policy import load_config
from cascade_notify.simulate import (
    BreakerSaving,
    Report,
    ScenarioError,
    load_scenario,
    percentile,
    simulate,
)

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "examples" / "scenarios"

POLICY = """\
providers:
  wa: {{type: fake, channel: whatsapp, breaker: {breaker}}}
  sms: {{type: fake, channel: sms, breaker: false}}
policies:
  parcel:
    ttl: {ttl}
    steps:
      - channel: whatsapp
        providers: [wa]
        wait_for: delivered
        timeout: 60s
        retry: {{attempts: {attempts}, backoff: 5s}}
      - channel: sms
        providers: [sms]
        wait_for: delivered
        timeout: 5m
"""


def policy(*, breaker: str = "false", ttl: str = "1d", attempts: int = 1):
    return load_config(POLICY.format(breaker=breaker, ttl=ttl, attempts=attempts))


def scenario(extra: str = "", *, deliveries: int = 10, blocked: str = "{}"):
    return load_scenario(
        f"""\
traffic: {{deliveries: {deliveries}, window: 1h, start: 2021-10-04T12:00:00Z}}
segments:
  - {{name: all, share: 1, channels: [whatsapp, sms], reads: 0, blocked: {blocked}}}
channels:
  whatsapp: {{delivered: 2s}}
  sms: {{delivered: 10s}}
prices: {{wa: 0.01, sms: 0.05}}
currency: EUR
{extra}"""
    )


def figures(report: Report):
    (only,) = report.policies
    return only, {c.channel: c for c in only.channels}


def test_everyone_on_whatsapp_delivered_in_two_seconds():
    """No outage: each of the 10 goes out on WhatsApp once, `delivered` 2 s later."""
    run, channels = figures(simulate(policy(), scenario(), seed=1))
    assert (run.deliveries, run.delivered, run.exhausted, run.expired) == (10, 10, 0, 0)
    assert run.delivery_rate == 1.0
    assert (run.p50, run.p95, run.p99) == (2.0, 2.0, 2.0)
    assert set(channels) == {"whatsapp"}
    wa = channels["whatsapp"]
    assert (wa.calls, wa.sends, wa.failed, wa.cost) == (10, 10, 0, 0.1)
    assert run.cost == 0.1
    assert run.calls_created == 0
    assert run.breaker_skips == 0


def test_silent_whatsapp_costs_its_price_and_a_minute_then_sms():
    """WhatsApp accepts and never reports, all day: 60 s timeout, then SMS 10 s later =
    70 s each; both sends paid for: 10 * 0.01 + 10 * 0.05 = 0.60."""
    outage = "outages: [{provider: wa, after: 0s, duration: 1d, fails: silent}]"
    run, channels = figures(simulate(policy(), scenario(outage), seed=1))
    assert run.delivered == 10 and (run.p50, run.p95, run.p99) == (70.0, 70.0, 70.0)
    assert (channels["whatsapp"].sends, channels["whatsapp"].failed) == (10, 10)
    assert (channels["sms"].sends, channels["sms"].failed) == (10, 0)
    assert run.cost == pytest.approx(0.6)


def test_refused_whatsapp_costs_nothing_and_sms_goes_at_once():
    """Refused connections: one failed call each (retry attempts: 1), no charge, SMS at
    once: 10 s; only the SMS is paid for."""
    outage = "outages: [{channel: whatsapp, after: 0s, duration: 1d, fails: refused}]"
    run, channels = figures(simulate(policy(), scenario(outage), seed=1))
    assert (run.p50, run.p99) == (10.0, 10.0)
    assert (channels["whatsapp"].calls, channels["whatsapp"].sends) == (10, 0)
    assert channels["whatsapp"].failed == 10 and channels["whatsapp"].cost == 0
    assert run.cost == pytest.approx(0.5)


def test_a_blocked_messenger_answers_unreachable():
    """Blocked (unreachable) for everyone: as refused, the cascade moves on at once."""
    run, channels = figures(simulate(policy(), scenario(blocked="{whatsapp: unreachable}")))
    assert (run.p50, channels["whatsapp"].failed, channels["sms"].sends) == (10.0, 10, 10)


def test_deliveries_expire_when_the_ttl_ends_first():
    """ttl 30 s, WhatsApp silent with a 60 s timeout: every delivery expires."""
    outage = "outages: [{provider: wa, after: 0s, duration: 1d, fails: silent}]"
    run, channels = figures(simulate(policy(ttl="30s"), scenario(outage)))
    assert (run.delivered, run.expired, run.delivery_rate) == (0, 10, 0.0)
    assert run.p50 is None and "sms" not in channels


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99)) == (
        50.0,
        95.0,
        99.0,
    )
    assert percentile([7.0], 99) == 7.0 and percentile([], 50) is None


def test_the_same_seed_gives_the_same_report():
    """Receipt delays, segments, losses and the engine's own retry jitter all come from the
    seed: two runs agree on every delivery's figures; another seed does not."""
    config = policy(breaker="{failures: 3}", attempts=3)
    mixed = load_scenario(
        """\
traffic: {deliveries: 300, window: 1h, start: 2021-10-04T12:00:00Z}
segments:
  - {name: a, share: 2, channels: [whatsapp, sms], read_after: {median: 1m, p95: 10m}}
  - {name: b, share: 1, channels: [sms]}
channels:
  whatsapp: {delivered: {median: 2s, p95: 30s}, lost: 0.05}
  sms: {delivered: {min: 5s, max: 40s}}
outages:
  - {channel: whatsapp, after: 20m, duration: 20m, fails: silent}
  - {provider: wa, after: 45m, duration: 10m, fails: 5xx}
prices: {wa: 0.01, sms: 0.05}
"""
    )
    first = simulate(config, mixed, seed=7)
    again = simulate(config, mixed, seed=7)
    other = simulate(config, mixed, seed=8)
    assert first == again
    assert json.dumps(first.to_dict()) == json.dumps(again.to_dict())
    assert first.to_dict() != other.to_dict()


def test_a_breaker_spends_less_on_the_outage_than_none():
    """WhatsApp silent for 40 minutes of the hour: without a breaker every delivery in it
    pays for a WhatsApp message that never arrives and waits out the timeout; with one
    the step is skipped once it opens."""
    outage = load_scenario(
        """\
traffic: {deliveries: 200, window: 1h, start: 2021-10-04T12:00:00Z}
segments: [{name: all, share: 1, channels: [whatsapp, sms], reads: 0}]
channels: {whatsapp: {delivered: 2s}, sms: {delivered: 10s}}
outages: [{provider: wa, after: 10m, duration: 40m, fails: silent}]
prices: {wa: 0.01, sms: 0.05}
"""
    )
    report = simulate(
        policy(breaker="{failures: 3, cool_down: 5m}"), outage, seed=3, compare=policy()
    )
    guarded, bare = report.policies
    assert guarded.cost < bare.cost
    late = [
        sum(1 for _, took in r.samples if took is not None and took >= 70) for r in (guarded, bare)
    ]
    assert late[0] < late[1]  # fewer wait out WhatsApp's minute
    assert guarded.breaker_skips > 0 and bare.breaker_skips == 0
    saved = guarded.breaker_saved
    assert isinstance(saved, BreakerSaving)
    assert saved.cost == pytest.approx(bare.cost - guarded.cost)
    assert saved.failed_calls > 0
    assert bare.breaker_saved == BreakerSaving(0, 0, 0.0, 0, 0.0)


def test_scenario_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        """\
traffic:
  deliveries: 0
  window: 1h
segments:
  - {name: a, share: 1, channels: [sms], raeds: 0.5}
channels:
  sms: {delivered: {median: 5s}}
outages:
  - {provider: wa, start: 2021-10-04T15:40:00Z, duration: 6h, fails: dns}
"""
    )
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    text = str(caught.value)
    issues = {i.path: i for i in caught.value.issues}
    assert issues["traffic.deliveries"].line == 2 and issues["traffic.deliveries"].source == str(
        path
    )
    assert "did you mean 'reads'" in issues["segments[0].raeds"].message
    assert issues["segments[0].raeds"].line == 5
    assert issues["channels.sms.delivered"].line == 7
    assert "median, p95" in issues["channels.sms.delivered"].message
    assert issues["outages[0].fails"].line == 9
    assert f"{path}:2" in text


def test_an_outage_of_a_provider_the_policy_lacks_is_refused_with_its_line(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        """\
traffic: {deliveries: 1, window: 1h}
segments: [{name: a, share: 1, channels: [sms]}]
outages:
  - {provider: whatsapp_cloud, after: 0s, duration: 1h}
  - {channel: viber, after: 0s, duration: 1h}
prices: {telegram: 0.1}
"""
    )
    with pytest.raises(ScenarioError) as caught:
        simulate(policy(), load_scenario(path))
    issues = {i.path: i for i in caught.value.issues}
    assert issues["outages[0].provider"].line == 4
    assert "'whatsapp_cloud' is not a provider" in issues["outages[0].provider"].message
    assert "neither a provider nor a channel" in issues["prices.telegram"].message
    assert issues["outages[1].channel"].line == 5
    assert "no provider of the policy sends on viber" in issues["outages[1].channel"].message


@pytest.mark.parametrize("name", ["outage-2021-10-04.yaml", "blocked-messenger.yaml"])
def test_the_bundled_scenarios_run_small(name):
    """The examples load, and a 300-delivery cut of each runs against the example policy."""
    full = load_scenario(SCENARIOS / name)
    traffic = full.model.traffic.model_copy(update={"deliveries": 300})
    small = dataclasses.replace(full, model=full.model.model_copy(update={"traffic": traffic}))
    report = simulate(
        load_config(SCENARIOS / "parcel-policy.yaml"), small, seed=1, breaker_baseline=False
    )
    (run,) = report.policies
    assert run.deliveries == 300 and run.delivery_rate > 0.9
    assert run.cost > 0


LEARNING = """\
providers:
  wa: {{type: fake, channel: whatsapp, breaker: false}}
  sms: {{type: fake, channel: sms, breaker: false}}
policies:
  parcel:
    order: {order}
    steps:
      - {{channel: whatsapp, providers: [wa], wait_for: delivered, timeout: 60s}}
      - {{channel: sms, providers: [sms], wait_for: delivered, timeout: 5m}}
"""


def test_a_pool_of_recipients_repeats_customers_and_the_learned_order_learns():
    """`traffic.recipients: 5`: 60 deliveries over a day go to five customers, each in one
    segment. WhatsApp silently blocked for them: the fixed order pays and waits for
    WhatsApp on every delivery; the learned order only until SMS has reached a customer."""
    blocked = load_scenario(
        """\
traffic: {deliveries: 60, recipients: 5, window: 1d, start: 2021-10-04T00:00:00Z}
segments:
  - {name: all, share: 1, channels: [whatsapp, sms], reads: 0, blocked: {whatsapp: silent}}
channels: {sms: {delivered: 10s}}
prices: {wa: 0.01, sms: 0.05}
"""
    )
    fixed, learned = simulate(
        load_config(LEARNING.format(order="fixed")),
        blocked,
        seed=3,
        compare=load_config(LEARNING.format(order="learned")),
        breaker_baseline=False,
    ).policies
    sends = {
        name: {c.channel: c.sends for c in run.channels}
        for name, run in (("fixed", fixed), ("learned", learned))
    }
    assert fixed.delivered == learned.delivered == 60
    assert sends["fixed"] == {"whatsapp": 60, "sms": 60}
    assert sends["learned"]["sms"] == 60 and sends["learned"]["whatsapp"] <= 5
    assert (fixed.p50, learned.p50) == (70.0, 10.0)  # 60 s waiting on WhatsApp, then SMS
