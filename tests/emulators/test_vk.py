"""The VK emulator on its own: parameter checks, duplicate suppression by `random_id`,
the confirmation handshake and callback retries until `ok`."""

from __future__ import annotations

import httpx

from cascade_notify.testing import FakeClock
from cascade_notify.testing.emulators import VkEmulator

from .conftest import Receiver


async def test_checks_and_duplicate_suppression(clock: FakeClock, http: httpx.AsyncClient) -> None:
    """JSON bodies, a missing `v` or `random_id` are errors with HTTP 200; a repeated
    `random_id` answers the first id and delivers nothing new."""
    async with VkEmulator(clock=clock) as emu:
        url = f"{emu.api_url}/method/messages.send"
        auth = {"Authorization": f"Bearer {emu.access_token}"}
        base = {"peer_id": "7", "message": "hi", "v": "5.199"}
        as_json = await http.post(url, headers=auth, json={**base, "random_id": 1})
        no_v = await http.post(url, headers=auth, data={"peer_id": "7", "random_id": "1"})
        no_random = await http.post(url, headers=auth, data=base)
        no_token = await http.post(url, data={**base, "random_id": "1"})
        first = await http.post(url, headers=auth, data={**base, "random_id": "99"})
        again = await http.post(url, headers=auth, data={**base, "random_id": "99"})
        other = await http.post(
            url, data={**base, "random_id": "100", "access_token": emu.access_token}
        )
    assert {r.status_code for r in (as_json, no_v, no_random, no_token)} == {200}
    assert as_json.json()["error"]["error_code"] == 8
    assert no_v.json()["error"]["error_code"] == 8
    assert no_random.json()["error"]["error_code"] == 100
    assert no_token.json()["error"]["error_code"] == 5
    assert first.json() == again.json() and other.json()["response"] == first.json()["response"] + 1
    assert len(emu.sent_to("7")) == 2


async def test_confirmation_and_retries_until_ok(clock: FakeClock, receiver: Receiver) -> None:
    """A confirmation answered with anything but the code fails; an event answered 500
    is posted again with `X-Retry-Counter`, carrying the secret in the body."""
    async with VkEmulator(clock=clock, webhook_url=receiver.url) as emu:
        [confirm] = await emu.event("confirmation", "*")
        receiver.answers = [500]
        [allow] = await emu.event("message_allow", "7", key="anna")
        await clock.advance(10)
        await clock.settle()
    assert not emu.confirmed and not confirm.delivered  # the receiver answers "ok"
    assert len(allow.attempts) == 2 and allow.delivered
    first, second = receiver.posts()[1:]
    assert "x-retry-counter" not in first.headers and second.headers["x-retry-counter"] == "1"
    assert allow.json()["secret"] == emu.secret and allow.json()["object"]["key"] == "anna"
