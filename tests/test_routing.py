"""Routing rules (issue 20, item 1): `routes:` choose a send's policy by the recipient and
the message, first match wins, `default_policy` otherwise, `send(policy=)` overrides; the
choice is recorded on the delivery; validate reports bad and unreachable routes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cascade_notify import Message, Notifier, Recipient
from cascade_notify.cli import app
from cascade_notify.errors import PolicyError, RecipientError
from cascade_notify.models import Route
from cascade_notify.observe.timeline import timeline
from cascade_notify.policy import load_config
from cascade_notify.routing import area_of

HEAD = """\
store: memory://
sender_country: RU
providers:
  tg: {type: fake, channel: telegram, behavior: deliver}
  vb: {type: fake, channel: viber, behavior: deliver}
  sms: {type: fake, channel: sms, behavior: deliver}
  mail: {type: fake, channel: email, behavior: deliver}
policies:
  standard:
    steps:
      - {channel: telegram, providers: [tg], wait_for: accepted}
      - {channel: sms, providers: [sms]}
  regions:
    steps:
      - {channel: viber, providers: [vb]}
      - {channel: sms, providers: [sms]}
  promo:
    steps:
      - {channel: email, providers: [mail], wait_for: accepted}
      - {channel: sms, providers: [sms]}
default_policy: standard
"""
TEXT = Message(text="Your parcel has arrived.")


def routed(routes: str) -> Notifier:
    return Notifier(load_config(HEAD + "routes:\n" + routes), worker=False)


async def policy_of(notifier: Notifier, recipient: Recipient, message: Message = TEXT) -> str:
    async with notifier:
        return (await notifier.send(recipient, message)).policy


def who(**kwargs: object) -> Recipient:
    kwargs.setdefault("sms", "+79161234567")
    return Recipient(id="r", **kwargs)  # type: ignore[arg-type]


async def test_country_is_read_from_the_phone_number() -> None:
    """`country` is the ISO code of the recipient's number; one value or a list."""
    notifier = routed("  - {when: {country: [KZ, UZ]}, policy: regions}\n")
    assert await policy_of(notifier, who(sms="+77012345678")) == "regions"
    notifier = routed("  - {when: {country: kz}, policy: regions}\n")
    assert await policy_of(notifier, who(sms="+79161234567")) == "standard"
    assert await policy_of(notifier, Recipient(id="r", telegram="1")) == "standard"  # no number


async def test_country_of_a_national_number_read_in_default_region() -> None:
    """A number given without its country code is read in default_region before routing."""
    config = load_config(
        HEAD.replace("sender_country: RU", "sender_country: RU\ndefault_region: KZ")
        + "routes:\n  - {when: {country: KZ}, policy: regions}\n"
    )
    async with Notifier(config, worker=False) as notifier:
        made = await notifier.send(Recipient(id="r", sms="8 701 234 5678"), TEXT)
    assert (made.policy, made.recipient.sms) == ("regions", "+77012345678")


async def test_region_is_the_recipients_own_or_its_numbers_area() -> None:
    """`region` matches the recipient's region (case aside); without one, the area the
    offline geocoder gives the number (Moscow for +7 495); an ISO code there names none."""
    notifier = routed("  - {when: {region: [moscow, Kazan]}, policy: regions}\n")
    assert await policy_of(notifier, who(region="Kazan")) == "regions"
    assert await policy_of(notifier, who(sms="+74951234567")) == "regions"
    assert await policy_of(notifier, who(sms="+74951234567", region="RU")) == "regions"
    assert await policy_of(notifier, who(sms="+74951234567", region="Omsk")) == "standard"
    assert await policy_of(notifier, who(sms="+79161234567")) == "standard"  # a mobile range


def test_the_geocoder_knows_landline_areas_not_mobile_ranges() -> None:
    """What phonenumbers' geocoder gives offline: a city or province for a landline range,
    nothing below the country for a Russian mobile one."""
    assert area_of("+74951234567") == "moscow"
    assert area_of("+78121234567") == "st petersburg"
    assert area_of("+79161234567") is None


@pytest.mark.parametrize(
    "number",
    ["+74951234567", "+78432123456", "+79031234567", "+77172123456", "+14155552671",
     "+442071234567", "+5491123456789", "+541143211234", "+4930123456", "+80012345678"],
)  # fmt: skip
def test_the_area_is_what_the_geocoder_says(number: str) -> None:
    """area_of reads the geocoder's table itself: the same answer as the library's call
    (the country alone counting as no area)."""
    import phonenumbers
    from phonenumbers import geocoder

    parsed = phonenumbers.parse(number)
    country = phonenumbers.region_code_for_number(parsed)
    said = geocoder.description_for_valid_number(parsed, "en", region=country)
    expected = None if said in ("", geocoder.country_name_for_number(parsed, "en")) else said
    assert area_of(number) == (None if expected is None else expected.casefold())


async def test_locale_matches_a_language_or_a_whole_locale() -> None:
    """`locale: kk` matches kk and kk-KZ (and kk_KZ); `locale: ru-RU` only ru-RU."""
    notifier = routed(
        "  - {when: {locale: kk}, policy: regions}\n  - {when: {locale: ru-RU}, policy: promo}\n"
    )
    assert await policy_of(notifier, who(locale="kk_KZ")) == "regions"
    assert await policy_of(notifier, who(locale="KK")) == "regions"
    assert await policy_of(notifier, who(locale="ru-ru")) == "promo"
    assert await policy_of(notifier, who(locale="ru")) == "standard"
    assert await policy_of(notifier, who()) == "standard"


async def test_tags_match_when_the_recipient_has_any_of_them() -> None:
    """`tags: [vip, b2b]` matches a recipient with either tag."""
    notifier = routed("  - {when: {tags: [vip, b2b]}, policy: regions}\n")
    assert await policy_of(notifier, who(tags={"b2b", "new"})) == "regions"
    assert await policy_of(notifier, who(tags={"new"})) == "standard"
    assert await policy_of(notifier, who()) == "standard"


async def test_category_is_the_messages() -> None:
    """`category` matches the message's category."""
    notifier = routed("  - {when: {category: marketing}, policy: promo}\n")
    sale = Message(text="Sale!", category="marketing")
    assert await policy_of(notifier, who(email="a@example.com"), sale) == "promo"
    assert await policy_of(notifier, who(email="a@example.com")) == "standard"


async def test_channels_are_the_addresses_the_recipient_has_not_opted_out_of() -> None:
    """`channels: [viber]` matches a recipient with a viber address it has not opted
    out of."""
    notifier = routed("  - {when: {channels: viber}, policy: regions}\n")
    assert await policy_of(notifier, who(viber="v1")) == "regions"
    assert await policy_of(notifier, who(viber="v1", opted_out={"viber"})) == "standard"
    assert await policy_of(notifier, who(telegram="1")) == "standard"
    notifier = routed("  - {when: {channels: [max, push]}, policy: regions}\n")
    assert await policy_of(notifier, who(max="m1")) == "regions"
    assert await policy_of(notifier, who(addresses={"push": "p1"})) == "regions"
    assert await policy_of(notifier, who(addresses={"push": "p1"}, opted_out={"push"})) == (
        "standard"
    )


async def test_every_key_of_a_when_must_match() -> None:
    """Several keys: all must hold."""
    notifier = routed("  - {when: {country: RU, tags: vip, channels: viber}, policy: regions}\n")
    assert await policy_of(notifier, who(tags={"vip"}, viber="v")) == "regions"
    assert await policy_of(notifier, who(tags={"vip"})) == "standard"
    assert await policy_of(notifier, who(sms="+77012345678", tags={"vip"}, viber="v")) == (
        "standard"
    )


async def test_the_first_matching_route_wins_and_is_recorded() -> None:
    """Routes are tried in order; the delivery records the index and the conditions."""
    notifier = routed(
        "  - {when: {tags: vip}, policy: promo}\n"
        "  - {when: {country: RU}, policy: regions}\n"
        "  - {when: {tags: vip, country: RU}, policy: standard}\n"
    )
    async with notifier:
        vip = await notifier.send(who(tags={"vip"}), TEXT)
        plain = await notifier.send(who(), TEXT)
    assert vip.policy == "promo"
    assert vip.route == Route(source="route", index=0, when=(("tags", ("vip",)),))
    assert plain.policy == "regions" and plain.route is not None and plain.route.index == 1
    assert plain.route.describe() == "routes[1]: country RU"


async def test_no_match_gets_the_default_policy() -> None:
    """No route matches: default_policy, recorded as the default."""
    notifier = routed("  - {when: {country: KZ}, policy: regions}\n")
    async with notifier:
        made = await notifier.send(who(), TEXT)
    assert made.policy == "standard"
    assert made.route == Route(source="default")
    assert "by default_policy" in (timeline(made).entries[0].detail or "")


async def test_an_explicit_policy_overrides_the_routes() -> None:
    """send(policy=) wins over a matching route, and is recorded as the caller's."""
    notifier = routed("  - {when: {}, policy: regions}\n")
    async with notifier:
        made = await notifier.send(who(), TEXT, policy="promo")
        routed_one = await notifier.send(who(), TEXT)
    assert made.policy == "promo" and made.route == Route(source="explicit")
    assert routed_one.policy == "regions"


async def test_the_routed_policy_must_reach_the_recipient() -> None:
    """The chosen policy is checked as an explicit one: no reachable step is refused."""
    notifier = routed("  - {when: {tags: mail}, policy: promo}\n")
    async with notifier:
        with pytest.raises(RecipientError, match="promo"):
            await notifier.send(Recipient(id="r", telegram="1", tags={"mail"}), TEXT)


def test_a_route_naming_an_unknown_policy_is_an_error_with_its_place() -> None:
    """`policy:` of a route names a defined policy; else an error at its line and column."""
    with pytest.raises(PolicyError) as caught:
        load_config(HEAD + "routes:\n  - when: {tags: vip}\n    policy: regoins\n")
    (issue,) = caught.value.issues
    assert (issue.path, issue.line, issue.column) == ("routes[0].policy", 24, 13)
    assert "'regoins' is not a policy; did you mean 'regions'?" in issue.message


def test_an_unknown_when_key_is_an_error_with_a_suggestion() -> None:
    """An unknown key in `when` names the keys there are and the closest one; every bad
    route is reported, not only the first."""
    text = HEAD + "routes:\n  - when: {contry: RU}\n    policy: regions\n  - policy: nope\n"
    with pytest.raises(PolicyError) as caught:
        load_config(text)
    first, second = caught.value.issues
    assert (first.path, first.line, first.column) == ("routes[0].when.contry", 23, 12)
    assert "unknown key 'contry'; did you mean 'country'?" in first.message
    assert "(allowed: country, region, locale, tags, category, channels)" in first.message
    assert (second.path, second.line) == ("routes[1].policy", 25)


def test_bad_when_values_are_errors() -> None:
    """A country is an ISO code; a channel a channel name; routes a list."""
    with pytest.raises(PolicyError) as caught:
        load_config(HEAD + "routes:\n  - {when: {country: XX, channels: [Viber]}, policy: promo}\n")
    messages = {i.path: i.message for i in caught.value.issues}
    assert "not an ISO 3166 country code" in messages["routes[0].when.country[0]"]
    assert "not a channel name" in messages["routes[0].when.channels[0]"]
    with pytest.raises(PolicyError, match="routes: must be a list"):
        load_config(HEAD + "routes: {when: {}}\n")


def test_a_route_after_a_catch_all_is_a_warning() -> None:
    """A route after one that matches every send never matches: a warning at it."""
    config = load_config(
        HEAD + "routes:\n  - {when: {}, policy: regions}\n  - {when: {tags: vip}, policy: promo}\n"
    )
    (warning,) = config.warnings
    assert (warning.path, warning.line, warning.column) == ("routes[1]", 24, 5)
    assert "can never match: routes[0] before it matches every send" in warning.message


def test_a_route_an_earlier_one_covers_is_a_warning() -> None:
    """An earlier route whose every condition takes all the later one's values catches
    all of its sends; a narrower earlier route does not."""
    config = load_config(
        HEAD + "routes:\n"
        "  - {when: {country: [RU, KZ]}, policy: regions}\n"
        "  - {when: {country: RU, tags: vip}, policy: promo}\n"
        "  - {when: {locale: ru}, policy: promo}\n"
        "  - {when: {locale: ru-RU}, policy: regions}\n"
        "  - {when: {tags: [vip, b2b]}, policy: regions}\n"
    )
    assert [(w.path, "routes[" in w.message) for w in config.warnings] == [
        ("routes[1]", True),
        ("routes[3]", True),
    ]
    assert "matches every send this one does" in config.warnings[0].message


def test_validate_prints_route_errors_and_warnings_with_their_place(tmp_path: Path) -> None:
    """`cascade-notify validate` shows a route's error, and the unreachable warning, as
    file:line:column."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(HEAD + "routes:\n  - {when: {tagz: vip}, policy: promo}\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:23:13: routes[0].when.tagz: unknown key 'tagz'; did you mean 'tags'?" in (
        " ".join(result.output.split())
    )
    shadowed = tmp_path / "shadowed.yaml"
    shadowed.write_text(
        HEAD + "routes:\n  - {when: {}, policy: promo}\n  - {when: {}, policy: regions}\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["validate", str(shadowed)])
    assert result.exit_code == 0, result.output
    assert "routes[0]: matches everything → promo" in result.output
    assert f"warning {shadowed}:24:5: routes[1]: this route can never match" in (
        " ".join(result.output.split())
    )


async def test_send_many_routes_each_item() -> None:
    """send_many routes each item on its own; its `policy=` is explicit for all."""
    notifier = routed("  - {when: {tags: vip}, policy: regions}\n")
    async with notifier:
        result = await notifier.send_many([(who(tags={"vip"}), TEXT), (who(), TEXT)])
        forced = await notifier.send_many([(who(tags={"vip"}), TEXT)], policy="promo")
        made = [await notifier.get(d.id) for d in [*result.deliveries, *forced.deliveries]]
    assert [(d.policy, d.route.source if d.route else None) for d in made] == [
        ("regions", "route"),
        ("standard", "default"),
        ("promo", "explicit"),
    ]


def test_tags_on_a_recipient() -> None:
    """Recipient.tags: a collection of non-empty strings, kept through to_dict/from_dict."""
    anna = Recipient(id="a", sms="+79161234567", tags=["vip", "b2b"])  # type: ignore[arg-type]
    assert anna.tags == frozenset({"vip", "b2b"})
    assert anna.to_dict()["tags"] == ["b2b", "vip"]
    assert Recipient.from_dict(json.loads(json.dumps(anna.to_dict()))) == anna
    assert Recipient.restore(anna.to_dict()) == anna
    with pytest.raises(RecipientError, match="not a str"):
        Recipient(id="a", tags="vip")  # type: ignore[arg-type]
    with pytest.raises(RecipientError, match="not a tag"):
        Recipient(id="a", tags={""})


def _cli_policy(tmp_path: Path) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(
        f"store: sqlite:///{tmp_path / 'cascade.db'}\n"
        + HEAD.split("\n", 1)[1]
        + "routes:\n  - {when: {tags: vip}, policy: regions}\n",
        encoding="utf-8",
    )
    return path


def _stored(tmp_path: Path) -> dict[str, tuple[str, Route | None]]:
    import asyncio
    import sqlite3

    from cascade_notify.stores.sqlite import SQLiteStore

    async def read() -> dict[str, tuple[str, Route | None]]:
        store = SQLiteStore(tmp_path / "cascade.db")
        await store.open()
        try:
            with sqlite3.connect(tmp_path / "cascade.db") as conn:
                ids = [row[0] for row in conn.execute("SELECT id FROM deliveries")]
            found = [await store.get(i) for i in ids]
            return {d.recipient.id: (d.policy, d.route) for d in found if d is not None}
        finally:
            await store.close()

    return asyncio.run(read())


def test_tags_from_the_command_line_and_send_many_files(tmp_path: Path) -> None:
    """`send --tag vip`, a `tags` CSV cell ("vip, b2b") and a JSON Lines list all reach
    Recipient.tags, so the routes see them; `status` says which route chose the policy."""
    path = _cli_policy(tmp_path)
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            *("send", "-p", str(path), "--id", "cli", "--to-sms", "+79161234567"),
            *("--tag", "vip", "--at", "+1h", "Hi"),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = tmp_path / "rows.csv"
    rows.write_text('id,sms,tags,text\nc1,+79161234567,"b2b, vip",Hi\nc2,+79161234568,,Hi\n')
    result = runner.invoke(app, ["send-many", str(rows), "--policy", str(path), "--at", "+1h"])
    assert result.exit_code == 0, result.output
    lines = tmp_path / "rows.jsonl"
    lines.write_text(json.dumps({"id": "j1", "sms": "+79161234569", "tags": ["vip"], "text": "Hi"}))
    result = runner.invoke(app, ["send-many", str(lines), "--policy", str(path), "--at", "+1h"])
    assert result.exit_code == 0, result.output
    made = _stored(tmp_path)
    assert {k: v[0] for k, v in made.items()} == {
        "cli": "regions",
        "c1": "regions",
        "c2": "standard",
        "j1": "regions",
    }
    import sqlite3

    with sqlite3.connect(tmp_path / "cascade.db") as conn:
        (delivery_id,) = conn.execute(
            "SELECT id FROM deliveries WHERE policy = 'standard'"
        ).fetchone()
    shown = runner.invoke(app, ["status", delivery_id, "--policy", str(path)])
    assert shown.exit_code == 0, shown.output
    assert "policy chosen by default_policy: no route matched" in shown.output
