"""Policy loading: YAML in, validated `Config` out, and every mistake reported with its place."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import ClassVar

import pytest

from cascade_notify.errors import PolicyError, PolicyIssue
from cascade_notify.models import ReceiptStatus, Step, WaitFor
from cascade_notify.policy import Config, load_config, load_config_data
from cascade_notify.providers import registry
from cascade_notify.providers.base import Provider, ProviderSettings
from cascade_notify.providers.fake import FakeProvider, FakeSettings

# Four lines, so a policy appended to it starts on line 5.
PROVIDERS = """\
providers:
  wa: {type: fake, channel: whatsapp}
  tg: {type: fake, channel: telegram}
  sms: {type: fake, channel: sms}
"""


def issues(text: str, env: Mapping[str, str] | None = None) -> list[PolicyIssue]:
    with pytest.raises(PolicyError) as caught:
        load_config(text, env=env)
    return caught.value.issues


def only(text: str, env: Mapping[str, str] | None = None) -> PolicyIssue:
    found = issues(text, env)
    assert len(found) == 1, found
    return found[0]


class AcceptOnlySettings(ProviderSettings):
    token: str = "t"


class AcceptOnly(Provider):
    """Like a Telegram bot: fixed channel, no receipt beyond "accepted"."""

    type_name = "accept_only"
    default_channel = "telegram"
    receipts: ClassVar[frozenset[ReceiptStatus]] = frozenset({ReceiptStatus.SENT})
    Settings = AcceptOnlySettings


class DeliveryOnly(Provider):
    """Like an SMS gateway: delivery receipts, never read ones."""

    type_name = "delivery_only"
    default_channel = "sms"
    receipts: ClassVar[frozenset[ReceiptStatus]] = frozenset(
        {ReceiptStatus.SENT, ReceiptStatus.DELIVERED, ReceiptStatus.FAILED}
    )


@pytest.fixture
def limited_types() -> Iterator[None]:
    registry.register("accept_only", AcceptOnly)
    registry.register("delivery_only", DeliveryOnly)
    yield
    registry.unregister("accept_only")
    registry.unregister("delivery_only")


FULL = """\
store: sqlite:///tmp/cascade.db
default_policy: service
worker: {lease: 45s, concurrency: 8, batch: 50}
providers:
  wa:  {type: fake, channel: whatsapp, behavior: deliver, receipt_delay: 2s}
  tg:  {type: fake, channel: telegram}
  sms: {type: fake, channel: sms, behavior: transient, failures: 2}
  sms2: {type: fake, channel: sms}
policies:
  service:
    ttl: 12h
    steps:
      - channel: whatsapp
        providers: [wa]
        wait_for: read
        timeout: 10m
        retry: {attempts: 5, backoff: 2s, max_backoff: 30s}
        quiet_hours: {start: "22:00", end: "08:00"}
        categories: [transactional]
      - channel: sms
        providers: [sms, sms2]
  marketing:
    steps:
      - {channel: telegram, providers: [tg], wait_for: accepted}
"""


def test_valid_file_becomes_config_with_resolved_steps() -> None:
    """Every value written in the file reaches the Config and its Step objects."""
    config = load_config(FULL)
    assert isinstance(config, Config)
    assert config.store == "sqlite:///tmp/cascade.db"
    assert config.default_policy == "service"
    assert config.source is None
    assert (config.worker.lease, config.worker.concurrency, config.worker.batch) == (45.0, 8, 50)
    assert list(config.policies) == ["service", "marketing"]
    service = config.policies["service"]
    assert service.name == "service"
    assert service.ttl == 12 * 3600
    assert service.steps[0] == Step(
        channel="whatsapp",
        providers=("wa",),
        wait_for=WaitFor.READ,
        timeout=600.0,
        retry_attempts=5,
        retry_initial=2.0,
        retry_max=30.0,
        quiet_hours=(22 * 60, 8 * 60),
        categories=frozenset({"transactional"}),
    )
    assert service.steps[1].providers == ("sms", "sms2")
    assert config.policies["marketing"].steps[0].wait_for is WaitFor.ACCEPTED


def test_providers_carry_class_validated_settings_and_channel() -> None:
    """Each provider entry is resolved to its class, an instance of its Settings, and a channel."""
    wa = load_config(FULL).providers["wa"]
    assert (wa.name, wa.type, wa.cls, wa.channel) == ("wa", "fake", FakeProvider, "whatsapp")
    assert isinstance(wa.settings, FakeSettings)
    assert wa.settings.receipt_delay == 2.0


def test_defaults_fill_what_the_file_leaves_out() -> None:
    """Omitted settings take the documented defaults; one policy needs no default_policy."""
    config = load_config(
        PROVIDERS + "policies:\n  only:\n    steps: [{channel: sms, providers: [sms]}]\n"
    )
    assert config.store == "sqlite:///cascade.db"
    assert config.default_policy == "only"
    assert (config.worker.lease, config.worker.concurrency, config.worker.batch) == (30.0, 100, 100)
    policy = config.policies["only"]
    assert policy.ttl == 24 * 3600
    assert policy.steps == (Step(channel="sms", providers=("sms",)),)
    step = policy.steps[0]
    assert (step.wait_for, step.timeout, step.retry_attempts) == (WaitFor.DELIVERED, 600.0, 3)
    assert (step.retry_initial, step.retry_max, step.quiet_hours, step.categories) == (
        1.0,
        60.0,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("90s", 90.0),
        ("5m", 300.0),
        ("24h", 86400.0),
        ("250ms", 0.25),
        ("2d", 172800.0),
        ("45", 45.0),
        ("1.5", 1.5),
    ],
)
def test_durations_accept_units_and_plain_seconds(written: str, seconds: float) -> None:
    """A duration is a number of seconds or a number with ms, s, m, h, d or w."""
    text = (
        PROVIDERS
        + f"policies:\n  p:\n    steps: [{{channel: sms, providers: [sms], timeout: {written}}}]\n"
    )
    assert load_config(text).policies["p"].steps[0].timeout == seconds


def test_load_from_path_and_from_text(tmp_path: Path) -> None:
    """A PathLike or a one-line name of a file is read as that file; other strings are YAML text."""
    path = tmp_path / "cascade.yaml"
    path.write_text(FULL, encoding="utf-8")
    by_path = load_config(path)
    by_name = load_config(str(path))
    by_text = load_config(FULL)
    assert by_path.source == by_name.source == str(path)
    assert by_text.source is None
    assert by_path.policies == by_name.policies == by_text.policies


def test_issues_from_a_file_name_the_file(tmp_path: Path) -> None:
    """An issue found in a file carries the file's path, its line and column."""
    path = tmp_path / "bad.yml"
    path.write_text(PROVIDERS + "policies: {p: {steps: [{channel: sms, providers: [gone]}]}}\n")
    issue = only(str(path))
    assert (issue.source, issue.line) == (str(path), 5)
    assert str(issue).startswith(f"{path}:5:")


def test_missing_file_is_a_policy_error(tmp_path: Path) -> None:
    """A .yaml name that does not exist is reported as unreadable, not parsed as YAML text."""
    issue = only(str(tmp_path / "nowhere.yaml"))
    assert "cannot read" in issue.message


def test_load_config_data_validates_a_parsed_mapping() -> None:
    """A mapping is validated like a file; its issues carry the path but no line."""
    data = {
        "providers": {"sms": {"type": "fake", "channel": "sms"}},
        "policies": {"p": {"steps": [{"channel": "sms", "providers": ["sms"], "timeout": "${T}"}]}},
    }
    config = load_config_data(data, env={"T": "2m"}, source="app.py")
    assert config.policies["p"].steps[0].timeout == 120.0
    assert config.source == "app.py"
    data["policies"]["p"]["steps"][0]["timeout"] = 0  # type: ignore[index]
    with pytest.raises(PolicyError) as caught:
        load_config_data(data, env={})
    [issue] = caught.value.issues
    assert (issue.path, issue.line) == ("policies.p.steps[0].timeout", None)
    assert issue.message == "must be greater than 0, got 0"


# --- environment -------------------------------------------------------------------------------


ENV_DOC = (
    PROVIDERS.replace("channel: sms}", "channel: sms, behavior: '${SMS_BEHAVIOR:-deliver}'}")
    + """\
store: ${STORE_URL}
worker: {concurrency: "${CONCURRENCY}"}
policies:
  p:
    steps:
      - channel: sms
        providers: [sms]
        categories: ["$${not_a_var}", "${CATEGORY:-transactional}"]
"""
)


def test_env_variables_are_substituted() -> None:
    """${VAR} takes the environment's value, also where a number is expected."""
    env = {"STORE_URL": "postgresql://db/cascade", "CONCURRENCY": "7", "SMS_BEHAVIOR": "fail"}
    config = load_config(ENV_DOC, env=env)
    assert config.store == "postgresql://db/cascade"
    assert config.worker.concurrency == 7
    assert config.providers["sms"].settings.behavior == "fail"  # type: ignore[attr-defined]


def test_env_default_applies_when_unset_or_empty() -> None:
    """${VAR:-default} gives the default when VAR is unset or empty."""
    env = {"STORE_URL": "memory://", "CONCURRENCY": "1", "SMS_BEHAVIOR": ""}
    config = load_config(ENV_DOC, env=env)
    assert config.providers["sms"].settings.behavior == "deliver"  # type: ignore[attr-defined]
    assert "transactional" in (config.policies["p"].steps[0].categories or ())


def test_double_dollar_escapes_a_literal_reference() -> None:
    """$${ is a literal ${, and what follows is not looked up."""
    config = load_config(ENV_DOC, env={"STORE_URL": "memory://", "CONCURRENCY": "1"})
    assert config.policies["p"].steps[0].categories == frozenset({"${not_a_var}", "transactional"})


def test_missing_env_variable_names_it_and_where(tmp_path: Path) -> None:
    """An unset ${VAR} without default is an issue naming the variable, the file, line and field."""
    path = tmp_path / "env.yaml"
    path.write_text(ENV_DOC, encoding="utf-8")
    found = issues(str(path), env={"CONCURRENCY": "3"})
    assert [(i.path, i.line, i.source) for i in found] == [("store", 5, str(path))]
    assert str(found[0]).startswith(f"{path}:5:8: store: environment variable STORE_URL")


def test_env_is_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without env=, variables come from the process environment."""
    monkeypatch.setenv("STORE_URL", "memory://from-env")
    monkeypatch.setenv("CONCURRENCY", "2")
    assert load_config(ENV_DOC).store == "memory://from-env"


# --- YAML-level errors -------------------------------------------------------------------------


def test_yaml_syntax_error_reports_its_line() -> None:
    """Broken YAML is a PolicyError pointing at the line where parsing failed."""
    issue = only(PROVIDERS + "policies:\n  p:\n    ttl: 1h: 2h\n    steps: []\n")
    assert (issue.line, issue.column) == (7, 12)
    assert issue.message == "YAML syntax error: mapping values are not allowed here"


def test_duplicate_keys_are_refused() -> None:
    """A key given twice in one mapping is an error naming both lines, not a silent override."""
    text = (
        PROVIDERS
        + """\
  wa: {type: fake, channel: sms}
policies:
  p: {steps: [{channel: sms, providers: [sms], timeout: 1m, timeout: 2m}]}
"""
    )
    found = issues(text)
    assert [(i.path, i.line) for i in found] == [
        ("providers.wa", 5),
        ("policies.p.steps[0].timeout", 7),
    ]
    assert found[0].message == "duplicate key 'wa' (first given on line 2)"
    assert found[1].message == "duplicate key 'timeout' (first given on line 7)"


def test_python_tags_are_refused_and_never_run(tmp_path: Path) -> None:
    """A !!python/object tag is reported as not allowed, and nothing it names is executed."""
    marker = tmp_path / "pwned"
    text = (
        PROVIDERS
        + f"""\
policies:
  p:
    steps: [{{channel: sms, providers: [sms]}}]
    ttl: !!python/object/apply:os.makedirs ["{marker}"]
"""
    )
    issue = only(text)
    assert (issue.path, issue.line) == ("policies.p.ttl", 8)
    assert issue.message == (
        "the tag 'tag:yaml.org,2002:python/object/apply:os.makedirs' is not allowed; "
        "only plain YAML data is"
    )
    assert not marker.exists()


def test_malformed_standard_tag_is_an_issue_not_a_crash() -> None:
    """A value that its explicit standard tag cannot read is reported at its place."""
    found = issues("store: !!int abc\n")
    assert [(i.path, i.line, i.message) for i in found if i.path == "store"] == [
        ("store", 1, "'abc' is not a valid int")
    ]


def test_alias_bomb_is_refused() -> None:
    """Aliases that expand into a huge document are refused instead of exhausting memory."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    issue = only("\n".join(lines) + "\n")
    assert "expands to more than" in issue.message


def test_unquoted_times_and_merge_keys_read_as_written() -> None:
    """22:00 unquoted stays a time (not YAML 1.1 base 60), and a `<<` merge may be overridden."""
    text = (
        PROVIDERS
        + """\
policies:
  p:
    steps:
      - &base
        channel: whatsapp
        providers: [wa]
        retry: {attempts: 2}
        quiet_hours: {start: 22:00, end: 7:30}
      - <<: *base
        channel: sms
        providers: [sms]
"""
    )
    first, second = load_config(text).policies["p"].steps
    assert first.quiet_hours == second.quiet_hours == (22 * 60, 7 * 60 + 30)
    assert (second.channel, second.providers, second.retry_attempts) == ("sms", ("sms",), 2)


# --- validation: one test per rule ---------------------------------------------------------------


def test_three_different_errors_are_all_reported() -> None:
    """Validation does not stop at the first problem: every issue comes back, in file order."""
    text = (
        PROVIDERS
        + """\
policies:
  p:
    ttl: -1h
    steps:
      - channel: sms
        providers: [sms]
        wiat_for: read
      - channel: whatsapp
        providers: [nobody]
"""
    )
    found = issues(text)
    assert [(i.path, i.line) for i in found] == [
        ("policies.p.ttl", 7),
        ("policies.p.steps[0].wiat_for", 11),
        ("policies.p.steps[1].providers[0]", 13),
    ]
    assert str(PolicyError(found)).startswith("3 errors in cascade policy")


def test_unknown_step_key_is_named_with_the_allowed_keys() -> None:
    """A typo in a step is reported as an unknown key, with a suggestion and the allowed keys."""
    issue = only(
        PROVIDERS
        + """\
policies:
  p:
    steps:
      - channel: sms
        providers: [sms]
        wiat_for: delivered
"""
    )
    assert (issue.path, issue.line, issue.column) == ("policies.p.steps[0].wiat_for", 10, 9)
    assert issue.message == (
        "unknown key 'wiat_for'; did you mean 'wait_for'? (allowed: channel, providers, "
        "wait_for, timeout, retry, quiet_hours, categories, options, withdraw_superseded, "
        "on_too_long, max_segments, transliterate, keep_place)"
    )


def test_unknown_top_level_and_retry_keys() -> None:
    """Unknown keys at the top level and inside retry are reported where they are written."""
    found = issues(
        PROVIDERS
        + """\
polices: {}
policies:
  p:
    steps:
      - {channel: sms, providers: [sms], retry: {atempts: 2}}
"""
    )
    assert [(i.path, i.line) for i in found] == [
        ("polices", 5),
        ("policies.p.steps[0].retry.atempts", 9),
    ]
    assert found[0].message.startswith("unknown key 'polices'; did you mean 'policies'?")
    allowed = found[0].message.split("(allowed: ", 1)[1].rstrip(")").split(", ")
    top = {
        "store",
        "default_policy",
        "worker",
        "sender_country",
        "default_region",
        "links",
        "providers",
    }
    assert top | {"policies"} <= set(allowed)
    assert found[1].message.endswith("(allowed: attempts, backoff, max_backoff)")


def test_unknown_provider_type_lists_the_known_types() -> None:
    """A provider type the registry does not know is reported with the types it does know."""
    issue = only("""\
providers:
  wa: {type: whatsap_cloud, channel: whatsapp}
policies: {p: {steps: [{channel: whatsapp, providers: [wa]}]}}
""")
    assert (issue.path, issue.line) == ("providers.wa.type", 2)
    assert issue.message.startswith("unknown provider type 'whatsap_cloud'; known types: ")
    assert "fake" in issue.message


def test_provider_without_type_is_reported() -> None:
    """A provider entry must say its type."""
    issue = only("""\
providers:
  wa:
    channel: whatsapp
policies: {p: {steps: [{channel: whatsapp, providers: [wa]}]}}
""")
    assert (issue.path, issue.line) == ("providers.wa.type", 2)
    assert issue.message.startswith("is required; known types: ")


def test_provider_settings_are_validated_by_their_type() -> None:
    """Settings are checked against the type's own model, at providers.<name>.<field>."""
    found = issues("""\
providers:
  sms:
    type: fake
    channel: sms
    behavior: explode
    failures: -1
    colour: red
policies: {p: {steps: [{channel: sms, providers: [sms]}]}}
""")
    assert [(i.path, i.line) for i in found] == [
        ("providers.sms.behavior", 5),
        ("providers.sms.failures", 6),
        ("providers.sms.colour", 7),
    ]
    assert found[0].message.startswith("must be one of 'deliver', 'read',")
    assert found[0].message.endswith("; got 'explode'")
    assert found[1].message == "must be at least 0, got -1"
    assert found[2].message.startswith("unknown key 'colour'")
    assert found[2].message.endswith(
        "(allowed: channel, behavior, failures, receipt_delay, "
        "latency, retry_after, cost, price_per_segment, currency, overrides, receipts, type, "
        "breaker, rate_limit, retry)"
    )


def test_step_naming_an_undefined_provider() -> None:
    """A step may only name providers defined under providers:."""
    issue = only(
        PROVIDERS
        + """\
policies:
  p:
    steps:
      - channel: sms
        providers: [sms, smsc]
"""
    )
    assert (issue.path, issue.line) == ("policies.p.steps[0].providers[1]", 9)
    assert issue.message == "provider 'smsc' is not defined under providers: (wa, tg, sms)"


def test_provider_on_the_wrong_channel() -> None:
    """Every provider of a step must send on the step's channel."""
    issue = only(
        PROVIDERS
        + """\
policies:
  p:
    steps:
      - channel: whatsapp
        providers: [wa, tg]
"""
    )
    assert (issue.path, issue.line) == ("policies.p.steps[0].providers[1]", 9)
    assert issue.message == "provider 'tg' sends on telegram, but this step's channel is whatsapp"


@pytest.mark.usefixtures("limited_types")
@pytest.mark.parametrize(
    ("type_name", "channel", "wait_for", "message"),
    [
        (
            "accept_only",
            "telegram",
            "delivered",
            "provider 'x' (type accept_only) cannot report delivery receipts; "
            "use wait_for: accepted",
        ),
        (
            "delivery_only",
            "sms",
            "read",
            "provider 'x' (type delivery_only) cannot report read receipts; "
            "use wait_for: accepted or delivered",
        ),
    ],
)
def test_wait_for_the_provider_cannot_report(
    type_name: str, channel: str, wait_for: str, message: str
) -> None:
    """Waiting for a receipt a provider never sends is refused, suggesting what it can report."""
    issue = only(f"""\
providers:
  x: {{type: {type_name}}}
policies:
  p:
    steps:
      - channel: {channel}
        providers: [x]
        wait_for: {wait_for}
""")
    assert (issue.path, issue.line) == ("policies.p.steps[0].wait_for", 8)
    assert issue.message == message


@pytest.mark.usefixtures("limited_types")
def test_provider_type_channel_applies_when_settings_name_none() -> None:
    """A provider type's own channel applies when its settings name none."""
    config = load_config("""\
providers:
  x: {type: accept_only}
policies: {p: {steps: [{channel: telegram, providers: [x], wait_for: accepted}]}}
""")
    assert config.providers["x"].channel == "telegram"


def test_same_channel_twice_in_one_policy() -> None:
    """A channel appears at most once in a policy."""
    issue = only(
        PROVIDERS
        + """\
policies:
  p:
    steps:
      - {channel: sms, providers: [sms]}
      - {channel: whatsapp, providers: [wa]}
      - {channel: sms, providers: [sms]}
"""
    )
    assert (issue.path, issue.line) == ("policies.p.steps[2].channel", 10)
    assert issue.message == "channel sms is already used by steps[0]"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("timeout", "0", "must be greater than 0, got 0"),
        ("timeout", "-5m", "duration '-5m' is negative"),
        (
            "timeout",
            "soon",
            "'soon' is not a duration; write a number of seconds or e.g. 90s, 5m, 24h, 2d",
        ),
        ("retry", "{attempts: 0}", "must be at least 1, got 0"),
    ],
)
def test_bad_step_numbers(field: str, value: str, message: str) -> None:
    """A timeout must be a positive duration and retry.attempts at least 1."""
    issue = only(
        PROVIDERS
        + f"""\
policies:
  p:
    steps:
      - channel: sms
        providers: [sms]
        {field}: {value}
"""
    )
    suffix = ".attempts" if field == "retry" else ""
    assert (issue.path, issue.line) == (f"policies.p.steps[0].{field}{suffix}", 10)
    assert issue.message == message


def test_negative_ttl() -> None:
    """A policy's ttl cannot be negative."""
    issue = only(
        PROVIDERS + "policies:\n  p:\n    ttl: -1d\n    steps: [{channel: sms, providers: [sms]}]\n"
    )
    assert (issue.path, issue.line, issue.message) == (
        "policies.p.ttl",
        7,
        "duration '-1d' is negative",
    )


def test_policy_without_steps() -> None:
    """A policy needs at least one step."""
    issue = only(PROVIDERS + "policies:\n  p:\n    ttl: 1h\n    steps: []\n")
    assert (issue.path, issue.line) == ("policies.p.steps", 8)
    assert issue.message == "the policy has no steps; list at least one step"


def test_no_policies_at_all() -> None:
    """A file without policies is refused."""
    issue = only(PROVIDERS)
    assert issue.path == "policies"
    assert issue.message == "no policies are defined; add at least one under policies:"


def test_default_policy_must_name_a_policy() -> None:
    """default_policy names a defined policy, and is required when there are several."""
    step = "{steps: [{channel: sms, providers: [sms]}]}"
    two = f"policies:\n  a: {step}\n  b: {step}\n"
    wrong = only(PROVIDERS + "default_policy: c\n" + two)
    assert (wrong.path, wrong.line) == ("default_policy", 5)
    assert wrong.message == "'c' is not a policy (defined: a, b)"
    missing = only(PROVIDERS + two)
    assert missing.path == "default_policy"
    assert missing.message == "is required with several policies (defined: a, b)"
    assert load_config(PROVIDERS + "default_policy: b\n" + two).default_policy == "b"


@pytest.mark.parametrize("value", ["25:00", "10pm", "7", "22:60"])
def test_bad_quiet_hours(value: str) -> None:
    """quiet_hours start and end are times of day written HH:MM."""
    issue = only(
        PROVIDERS
        + f"""\
policies:
  p:
    steps:
      - channel: sms
        providers: [sms]
        quiet_hours: {{start: "{value}", end: "08:00"}}
"""
    )
    assert (issue.path, issue.line) == ("policies.p.steps[0].quiet_hours.start", 10)
    assert issue.message == f'{value!r} is not a time of day; write HH:MM, e.g. "22:00"'


def test_channel_names_are_checked() -> None:
    """A channel name is lower-case letters, digits and _, starting with a letter."""
    found = issues("""\
providers:
  x: {type: fake, channel: WhatsApp}
policies: {p: {steps: [{channel: 2fa, providers: [x]}]}}
""")
    assert [(i.path, i.line) for i in found] == [
        ("providers.x.channel", 2),
        ("policies.p.steps[0].channel", 3),
    ]
    assert all("is not a channel name" in i.message for i in found)


def test_a_typo_in_a_step_does_not_hide_its_provider_errors() -> None:
    """Provider cross-checks still run on a step that has another error."""
    found = issues(
        PROVIDERS + "policies: {p: {steps: [{channel: sms, providers: [tg], tmeout: 1}]}}\n"
    )
    assert [i.path for i in found] == [
        "policies.p.steps[0].providers[0]",
        "policies.p.steps[0].tmeout",
    ]


def test_a_provider_listed_twice_in_a_step() -> None:
    """A step names each provider once."""
    issue = only(PROVIDERS + "policies: {p: {steps: [{channel: sms, providers: [sms, sms]}]}}\n")
    assert (issue.path, issue.message) == (
        "policies.p.steps[0].providers[1]",
        "provider 'sms' is listed twice in this step",
    )


def test_max_backoff_not_below_backoff() -> None:
    """retry.max_backoff is at least retry.backoff."""
    step = "{channel: sms, providers: [sms], retry: {backoff: 10s, max_backoff: 5s}}"
    issue = only(PROVIDERS + f"policies: {{p: {{steps: [{step}]}}}}\n")
    assert (issue.path, issue.line) == ("policies.p.steps[0].retry.max_backoff", 5)
    assert issue.message == "must not be shorter than backoff"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the policy is empty; it needs providers: and policies:"),
        (
            "- a\n- b\n",
            "the policy must be a mapping, got a list ['a', 'b']; "
            "it needs providers: and policies:",
        ),
    ],
)
def test_document_must_be_a_mapping(text: str, message: str) -> None:
    """An empty document, or one that is not a mapping, is refused as a whole."""
    assert only(text).message == message
