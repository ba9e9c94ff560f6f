"""The resilience keys of a policy file: read beside the provider's own settings, checked
with their line and field like the rest."""

from __future__ import annotations

import pytest

from cascade_notify.errors import PolicyError, PolicyIssue
from cascade_notify.policy import load_config
from cascade_notify.providers.fake import FakeSettings

FULL = """\
sender_country: RU
default_policy: service
providers:
  wa:
    type: fake
    channel: whatsapp
    breaker: {failures: 3, rate: 0.25, window: 2m, min_calls: 10, cool_down: 1m, probes: 1}
    rate_limit: {per_second: 80, per_recipient_per_second: 0.5, burst: 4}
    retry: {attempts: 5, backoff: 2s, max_backoff: 1m}
  tg: {type: fake, channel: telegram, breaker: false}
  sms: {type: fake, channel: sms}
policies:
  service:
    brakes: {sms_per_prefix_per_hour: 50, prefix_digits: 6, cost_per_hour: 25.5}
    steps:
      - {channel: whatsapp, providers: [wa]}
      - {channel: telegram, providers: [tg], retry: {attempts: 2}, wait_for: accepted}
      - {channel: sms, providers: [sms], retry: {attempts: 4}}
  abroad:
    brakes: {allowed_countries: [ru, kz], calls_per_recipient_per_hour: null}
    steps:
      - {channel: whatsapp, providers: [wa], retry: {attempts: 2}}
"""


def issues(text: str) -> list[PolicyIssue]:
    with pytest.raises(PolicyError) as caught:
        load_config(text)
    return caught.value.issues


def test_resilience_keys_are_read_beside_the_type() -> None:
    """breaker, rate_limit and retry sit beside `type:` and never reach the type's settings."""
    config = load_config(FULL)
    wa = config.providers["wa"]
    assert wa.breaker is not None
    assert (wa.breaker.failures, wa.breaker.window, wa.breaker.cool_down) == (3, 120, 60)
    assert wa.rate_limit is not None
    assert (wa.rate_limit.per_second, wa.rate_limit.per_recipient_per_second) == (80, 0.5)
    assert wa.retry is not None and wa.retry.attempts == 5
    assert isinstance(wa.settings, FakeSettings)
    assert not {"breaker", "rate_limit", "retry"} & set(wa.settings.model_dump())
    assert config.providers["tg"].breaker is None
    assert config.providers["sms"].breaker is not None  # on by default
    assert config.providers["sms"].rate_limit is None


def test_a_provider_retry_is_the_default_of_its_steps() -> None:
    """A step takes its provider's retry keys for those it does not set itself."""
    steps = load_config(FULL).policies["service"].steps
    assert (steps[0].retry_attempts, steps[0].retry_initial, steps[0].retry_max) == (5, 2, 60)
    assert (steps[1].retry_attempts, steps[1].retry_initial) == (2, 1)  # tg has no retry:
    abroad = load_config(FULL).policies["abroad"].steps[0]
    assert (abroad.retry_attempts, abroad.retry_initial) == (2, 2)


def test_brakes_and_the_senders_country() -> None:
    """Brakes default to 5 SMS and 2 calls a number an hour; countries to the sender's own."""
    config = load_config(FULL)
    service, abroad = config.policies["service"].brakes, config.policies["abroad"].brakes
    assert (service.sms_per_recipient_per_hour, service.calls_per_recipient_per_hour) == (5, 2)
    assert (service.sms_per_prefix_per_hour, service.prefix_digits) == (50, 6)
    assert service.allowed_countries == ["RU"] and service.cost_per_hour == 25.5
    assert abroad.allowed_countries == ["RU", "KZ"]
    assert abroad.calls_per_recipient_per_hour is None
    plain = load_config(FULL.replace("sender_country: RU\n", ""))
    assert plain.policies["service"].brakes.allowed_countries is None


@pytest.mark.parametrize(
    ("old", "new", "path", "line", "message"),
    [
        (
            "failures: 3,",
            "failures: 0,",
            "providers.wa.breaker.failures",
            7,
            "must be at least 1, got 0",
        ),
        ("rate: 0.25", "rate: 1.5", "providers.wa.breaker.rate", 7, "must be at most 1, got 1.5"),
        (
            "cool_down: 1m",
            "cool_down: soon",
            "providers.wa.breaker.cool_down",
            7,
            "'soon' is not a duration; write a number of seconds or e.g. 90s, 5m, 24h, 2d",
        ),
        (
            "{per_second: 80, per_recipient_per_second: 0.5, burst: 4}",
            "{burst: 4}",
            "providers.wa.rate_limit",
            8,
            "set per_second, per_recipient_per_second, or both",
        ),
        (
            "    retry: {attempts",
            "    retyr: {attempts",
            "providers.wa.retyr",
            9,
            "unknown key 'retyr'; did you mean 'retry'?",
        ),
        (
            "[ru, kz]",
            "[ru, Kazakhstan]",
            "policies.abroad.brakes.allowed_countries[1]",
            20,
            "'Kazakhstan' is not an ISO 3166 country code (e.g. RU, KZ, GB)",
        ),
        (
            "prefix_digits: 6",
            "prefix_digit: 6",
            "policies.service.brakes.prefix_digit",
            14,
            "unknown key 'prefix_digit'; did you mean 'prefix_digits'?",
        ),
        (
            "sender_country: RU",
            "sender_country: Russia",
            "sender_country",
            1,
            "'Russia' is not an ISO 3166 country code (e.g. RU, KZ, GB)",
        ),
    ],
)
def test_mistakes_are_reported_with_line_and_field(
    old: str, new: str, path: str, line: int, message: str
) -> None:
    """Each mistake in a resilience key names its field and line, like any other."""
    assert old in FULL
    [issue] = issues(FULL.replace(old, new, 1))
    assert (issue.path, issue.line) == (path, line)
    assert issue.message.startswith(message), issue.message


def test_provider_retry_that_contradicts_itself() -> None:
    """A provider's max_backoff shorter than its backoff is refused at the provider, once."""
    [issue] = issues(FULL.replace("max_backoff: 1m", "max_backoff: 1s"))
    assert (issue.path, issue.line) == ("providers.wa.retry.max_backoff", 9)
    assert issue.message == "must not be shorter than backoff"
