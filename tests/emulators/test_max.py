"""The MAX emulator on its own: auth form, checks, subscriptions and update retries."""

from __future__ import annotations

import httpx

from cascade_notify.testing import FakeClock
from cascade_notify.testing.emulators import MaxEmulator

from .conftest import Receiver


async def test_auth_checks_and_shapes(clock: FakeClock, http: httpx.AsyncClient) -> None:
    """A `Bearer` token is 401 `verify.token`; a JSON body without a user, or text over
    4000 characters, is 400 `proto.payload`; a good send has `message.body.mid`."""
    async with MaxEmulator(clock=clock) as emu:
        url = f"{emu.api_url}/messages"
        bearer = await http.post(
            url, params={"user_id": "1"}, headers={"Authorization": f"Bearer {emu.token}"}
        )
        auth = {"Authorization": emu.token}
        no_user = await http.post(url, headers=auth, json={"text": "x"})
        long = await http.post(
            url, params={"user_id": "1"}, headers=auth, json={"text": "x" * 4001}
        )
        good = await http.post(url, params={"user_id": "1"}, headers=auth, json={"text": "hi"})
        me = await http.get(f"{emu.api_url}/me", headers=auth)
    assert (bearer.status_code, bearer.json()["code"]) == (401, "verify.token")
    assert (no_user.status_code, no_user.json()["code"]) == (400, "proto.payload")
    assert (long.status_code, long.json()["code"]) == (400, "proto.payload")
    message = good.json()["message"]
    assert message["body"]["mid"].startswith("mid.") and message["recipient"]["user_id"] == 1
    assert me.json()["is_bot"] is True


async def test_subscription_sets_url_secret_and_types(
    clock: FakeClock, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    """`POST /subscriptions` sets where updates go and their secret; types not asked
    for are recorded, not posted; a receiver answering 500 gets the update again."""
    async with MaxEmulator(clock=clock) as emu:
        auth = {"Authorization": emu.token}
        bad = await http.post(
            f"{emu.api_url}/subscriptions", headers=auth, json={"url": "u", "secret": "no!"}
        )
        sub = await http.post(
            f"{emu.api_url}/subscriptions",
            headers=auth,
            json={
                "url": receiver.url,
                "secret": "abc_DEF-9",
                "update_types": ["bot_stopped"],
                "version": "0.0.1",
            },
        )
        [started] = await emu.event("bot_started", "42", payload="p")
        receiver.answers = [500]
        [stopped] = await emu.event("bot_stopped", "42")
        await clock.advance(1)
        await clock.settle()
        listed = await http.get(f"{emu.api_url}/subscriptions", headers=auth)
    assert bad.json()["success"] is False and sub.json() == {"success": True}
    assert started.url is None and started.attempts == []
    assert [a.status for a in stopped.attempts] == [500, 200]
    assert receiver.posts()[-1].headers["x-max-bot-api-secret"] == "abc_DEF-9"
    assert listed.json()["subscriptions"][0]["url"] == receiver.url
