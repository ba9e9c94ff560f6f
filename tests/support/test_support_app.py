"""The support page over HTTP (httpx on the ASGI app): who may look, what each page
says, what it hides, and the breaker form's checks."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from cascade_notify.support import (
    TOKEN_ENV,
    AccessDenied,
    SupportError,
    SupportRequest,
    bearer_auth,
    env_auth,
)

from .scene import ANNA_PHONE, POLICY, TOKENS, TYPED, Scene, header_auth

AGENT = {"authorization": "Bearer agent-token-0123456789"}
OPERATOR = {"authorization": "Bearer operator-token-0123456789"}


@pytest.fixture
async def client(scene: Scene) -> AsyncIterator[httpx.AsyncClient]:
    app = scene.notifier.support_app(auth=header_auth)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://support.test") as c:
        yield c


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


async def test_no_auth_is_401_and_every_answer_is_locked_down(client: httpx.AsyncClient) -> None:
    """Without credentials: 401 with a challenge; every answer forbids scripts, framing
    and caching."""
    refused = await client.get("/")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    for answer in (refused, await client.get("/", headers=AGENT)):
        csp = answer.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "script-src" not in csp  # none at all: default-src 'none' covers them
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["cache-control"] == "no-store"
        assert "<script" not in answer.text


async def test_agent_finds_anna_by_a_national_number(
    client: httpx.AsyncClient, scene: Scene
) -> None:
    """A number typed as `8 (916) 123-45-67` is read in the policy's region and finds
    Anna's delivery; an agent sees it masked."""
    page = await client.get("/", params={"q": TYPED}, headers=AGENT)
    assert page.status_code == 200
    text = _text(page.text)
    assert "Found by phone number +79•••••••67" in text
    assert f"/d/{scene.anna}" in page.text
    assert ANNA_PHONE not in page.text
    assert scene.mallory not in page.text


@pytest.mark.parametrize(
    ("q", "who"),
    [
        ("boris@EXAMPLE.com", "boris"),
        ("parcel-12-345", "anna"),
        ("mallory", "mallory"),
        ("+7 903 123-45-67", "mallory"),
    ],
)
async def test_search_by_email_key_recipient_and_id(
    client: httpx.AsyncClient, scene: Scene, q: str, who: str
) -> None:
    """An e-mail in any case, an idempotency key, a recipient id, an international number
    and a delivery id each find their delivery and only it."""
    ids = {"anna": scene.anna, "boris": scene.boris, "mallory": scene.mallory}
    for query in (q, ids[who]):
        page = await client.get("/", params={"q": query}, headers=AGENT)
        shown = set(re.findall(r"/d/([0-9a-z]+)", page.text))
        assert shown == {ids[who]}, query


async def test_nothing_found_says_so(client: httpx.AsyncClient) -> None:
    page = await client.get("/", params={"q": "nobody"}, headers=AGENT)
    assert "Nothing found for “nobody”" in _text(page.text)


async def test_timeline_says_viber_after_whatsapp_failed(
    client: httpx.AsyncClient, scene: Scene
) -> None:
    """Anna's timeline: WhatsApp's failed receipt, then Viber delivered, in her time
    (Moscow) and the agent's (Yekaterinburg), with the cost."""
    page = await client.get(f"/d/{scene.anna}", headers=AGENT)
    text = _text(page.text)
    assert "delivered on viber: reached the customer" in text
    assert "receipt failed message undeliverable [131026]" in text
    assert text.index("whatsapp") < text.index("receipt delivered")
    assert "2026-01-01 03:00:00 MSK" in text and "2026-01-01 05:00:00 +05" in text
    assert "0.03" in text  # 0.01 + 0.02
    assert "Your parcel 12-345 has arrived" in text
    assert ANNA_PHONE not in page.text and "+79•••••••67" in text


async def test_a_call_task_says_who_called_and_how_it_went(
    client: httpx.AsyncClient, scene: Scene
) -> None:
    page = await client.get(f"/d/{scene.vera}", headers=AGENT)
    [row] = re.findall(r'<table id="calls">.*?<tbody>(.*?)</tbody>', page.text, re.S)
    assert _text(row).split() == [
        "desk", "delivered", "done", "irina", "reached", "her,", "she", "will", "come", "on",
        "Monday", "2026-01-01", "05:02:01", "+05",
    ]  # fmt: skip


async def test_operator_sees_addresses_in_full(client: httpx.AsyncClient, scene: Scene) -> None:
    page = await client.get(f"/d/{scene.anna}", headers=OPERATOR)
    assert ANNA_PHONE in page.text


async def test_texts_of_hidden_categories_are_not_shown(
    client: httpx.AsyncClient, scene: Scene
) -> None:
    """`support: {hide_text_for: [medical]}` hides Boris's text, to every role."""
    for who in (AGENT, OPERATOR):
        page = await client.get(f"/d/{scene.boris}", headers=who)
        assert "test results" not in page.text
        assert "The text is hidden by policy" in page.text


async def test_hostile_provider_error_renders_as_text(
    client: httpx.AsyncClient, scene: Scene
) -> None:
    """A provider's error with markup is escaped on the timeline and the operator's view."""
    for path in (f"/d/{scene.mallory}", "/operator"):
        page = await client.get(path, headers=OPERATOR)
        assert page.status_code == 200
        assert "<script>" not in page.text and "<img src=x" not in page.text
        assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in page.text


async def test_operator_view_lists_open_breakers_first(client: httpx.AsyncClient) -> None:
    page = await client.get("/operator", params={"since": "1d"}, headers=OPERATOR)
    text = _text(page.text)
    rows = re.findall(r'<tr id="breaker-([a-z]+)">', page.text)
    assert rows[0] == "wa" and set(rows) == {"wa", "viber", "mail", "desk"}
    assert "open (by hand)" in text and "Meta outage since 10:00" in text
    assert "<svg" in page.text and "Delivery rate" in text
    assert "failed" in text and "131026" in text


async def test_agents_read_but_never_change_breakers(client: httpx.AsyncClient) -> None:
    page = await client.get("/operator", headers=AGENT)
    assert 'name="csrf"' not in page.text
    posted = await client.post(
        "/breakers/wa", data={"action": "close", "reason": "x"}, headers=AGENT
    )
    assert posted.status_code == 403


async def _csrf(client: httpx.AsyncClient) -> str:
    page = await client.get("/operator", headers=OPERATOR)
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert found is not None
    return found[1]


async def test_operator_closes_a_breaker_with_a_reason(
    client: httpx.AsyncClient, scene: Scene
) -> None:
    """A close with the page's token and a reason closes it, records who and why, and
    sends the browser back to the view (303)."""
    token = await _csrf(client)
    form = {"csrf": token, "action": "close", "reason": "Meta says it is fixed"}
    posted = await client.post("/breakers/wa", data=form, headers=OPERATOR)
    assert posted.status_code == 303
    assert posted.headers["location"].startswith("/operator?changed=")
    [wa] = [b for b in await scene.notifier.breakers.list() if b.provider == "wa"]
    assert wa.state == "closed"
    assert wa.reason == "Meta says it is fixed (operator Olga, support page)"
    reopened = {"csrf": token, "action": "open", "reason": "again", "duration": "30m"}
    assert (await client.post("/breakers/wa", data=reopened, headers=OPERATOR)).status_code == 303
    [wa] = [b for b in await scene.notifier.breakers.list() if b.provider == "wa"]
    assert wa.state == "open" and wa.until == pytest.approx(scene.clock.now() + 1800)


@pytest.mark.parametrize(
    ("form", "headers", "status"),
    [
        ({"action": "close", "reason": "x"}, {}, 403),  # no token
        ({"action": "close", "reason": "x", "csrf": "0" * 64}, {}, 403),  # a forged one
        ({"action": "close", "reason": "x"}, {"origin": "https://evil.example"}, 403),
        ({"action": "close", "reason": "x"}, {"sec-fetch-site": "cross-site"}, 403),
        ({"action": "close", "reason": " "}, {}, 303),  # back, with "say why"
        ({"action": "explode", "reason": "x"}, {}, 400),
    ],
)
async def test_breaker_form_refusals_change_nothing(
    client: httpx.AsyncClient,
    scene: Scene,
    form: dict[str, str],
    headers: dict[str, str],
    status: int,
) -> None:
    if "csrf" not in form and status != 403:
        form = {**form, "csrf": await _csrf(client)}
    posted = await client.post("/breakers/wa", data=form, headers={**OPERATOR, **headers})
    assert posted.status_code == status
    [wa] = [b for b in await scene.notifier.breakers.list() if b.provider == "wa"]
    assert wa.state == "open"


async def test_unknown_pages_and_methods(client: httpx.AsyncClient) -> None:
    assert (await client.get("/d/nope", headers=AGENT)).status_code == 404
    assert (await client.get("/nowhere", headers=AGENT)).status_code == 404
    refused = await client.post("/", headers=AGENT)
    assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
    bad = await client.get("/", params={"cursor": "not-ours"}, headers=AGENT)
    assert bad.status_code == 400 and "cursor" in bad.text
    head = await client.head("/", headers=AGENT)
    assert head.status_code == 200 and head.content == b""
    token = await _csrf(client)
    posted = await client.post(
        "/breakers/ghost", data={"csrf": token, "action": "close", "reason": "x"}, headers=OPERATOR
    )
    assert posted.status_code == 404


async def test_auth_may_refuse_with_403_and_must_return_a_role(scene: Scene) -> None:
    def deny(request: SupportRequest) -> None:
        raise AccessDenied("support staff only")

    async def junk(request: SupportRequest) -> str:
        return "admin"

    for auth, status, says in ((deny, 403, "support staff only"), (junk, 500, "admin")):
        app = scene.notifier.support_app(auth=auth)  # type: ignore[arg-type]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            answer = await c.get("/")
        assert answer.status_code == status
        assert says in answer.text


async def test_bearer_tokens_and_basic_passwords(scene: Scene) -> None:
    """`bearer_auth` grants each token's role, as a bearer token or a Basic password;
    a wrong one is 401."""
    app = scene.notifier.support_app(auth=bearer_auth(TOKENS))  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.get("/", headers=AGENT)).status_code == 200
        basic = await c.get("/operator", auth=("olga", "operator-token-0123456789"))
        assert basic.status_code == 200 and 'name="csrf"' in basic.text
        assert (await c.get("/", auth=("olga", "wrong-token-0123456789"))).status_code == 401
    with pytest.raises(SupportError, match="at least 16"):
        bearer_auth({"short": "agent"})
    with pytest.raises(SupportError, match="CASCADE_NOTIFY_SUPPORT_TOKEN"):
        env_auth({})


def test_missing_jinja2_names_the_extra(scene: Scene, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jinja2", None)
    with pytest.raises(SupportError, match=r"cascade-notify\[support\]"):
        scene.notifier.support_app(auth=header_auth)


def test_auth_is_required(scene: Scene) -> None:
    with pytest.raises(SupportError, match="auth is required"):
        scene.notifier.support_app(auth=None)  # type: ignore[arg-type]


def test_serve_support_refuses_to_start_without_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve --support` with no CASCADE_NOTIFY_SUPPORT_TOKEN says what to set and exits 1,
    before it listens."""
    import typer
    from typer.testing import CliRunner

    from cascade_notify.cli.serve import serve

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("default_region: RU", f"store: sqlite:///{tmp_path}/s.db"))
    app = typer.Typer()
    app.command()(serve)
    result = CliRunner().invoke(app, ["--policy", str(policy), "--support", "--port", "1"])
    assert result.exit_code == 1
    assert TOKEN_ENV in result.output


async def test_operator_figures_are_kept_a_minute_and_breakers_never(
    client: httpx.AsyncClient, scene: Scene
) -> None:
    """The period's figures are counted again in the background once `figures_for` (60 s)
    old, and the view after shows the new count; a breaker change shows at once."""

    def counted(html: str) -> str:
        found = re.search(r"Figures counted at ([^(]+) \(", html)
        assert found is not None
        return found[1]

    first = await client.get("/operator", headers=OPERATOR)
    await scene.clock.advance(30)
    await scene.notifier.breakers.close("wa", reason="fixed")
    kept = await client.get("/operator", headers=OPERATOR)
    assert counted(kept.text) == counted(first.text)
    assert re.search(r'<tr id="breaker-wa">\s*<td>wa</td>\s*<td class="good">closed', kept.text)
    await scene.clock.advance(31)
    stale = await client.get("/operator", headers=OPERATOR)  # starts the count
    assert counted(stale.text) == counted(first.text)
    for _ in range(100):  # the count may read in a thread: give it a moment, not the clock
        await asyncio.sleep(0.01)
        again = await client.get("/operator", headers=OPERATOR)
        if counted(again.text) != counted(first.text):
            break
    assert counted(again.text) != counted(first.text)


async def test_served_alone_the_page_starts_and_stops_its_notifier() -> None:
    """Under uvicorn on its own (lifespan on), the page starts the notifier it was given
    and stops it at shutdown."""
    from cascade_notify import Notifier
    from webhook_harness import serve

    notifier = Notifier.from_yaml(POLICY, store="memory://", worker=False)
    app = notifier.support_app(auth=header_auth)
    async with serve(app, lifespan="on") as url, httpx.AsyncClient(base_url=url) as http:
        assert notifier.running
        page = await http.get("/", headers=AGENT)
        assert page.status_code == 200 and "The newest deliveries." in page.text
    assert not notifier.running


async def test_a_national_number_without_a_region_says_how_it_was_read(scene: Scene) -> None:
    """Without `default_region` a number typed without its country code is no phone: the
    page says why and searches the text as an id."""
    from cascade_notify import Notifier

    policy = POLICY.replace("default_region: RU\n", "")
    async with Notifier.from_yaml(policy, store="memory://", worker=False) as plain:
        app = plain.support_app(auth=header_auth)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            page = await c.get("/", params={"q": TYPED}, headers=AGENT)
    assert "not read as a phone number" in page.text
    assert "Nothing found for" in page.text
