"""The support page over every store: the search box, a timeline and the operator's view
read through the SQL stores' own queries, as on the memory store."""

from __future__ import annotations

import re

import httpx

from cascade_notify import Notifier
from cascade_notify.testing import FakeClock
from support.scene import NOW, POLICY, TYPED, build, header_auth

from .conftest import StoreFactory

AGENT = {"authorization": "Bearer agent-token-0123456789"}


async def test_support_page_on_every_store(store_factory: StoreFactory) -> None:
    clock = FakeClock(start=NOW)
    async with Notifier.from_yaml(POLICY, clock=clock, store=store_factory()) as notifier:
        scene = await build(notifier, clock)
        app = notifier.support_app(auth=header_auth)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            found = await http.get("/", params={"q": TYPED}, headers=AGENT)
            by_mail = await http.get("/", params={"q": "BORIS@example.com"}, headers=AGENT)
            story = await http.get(f"/d/{scene.anna}", headers=AGENT)
            call = await http.get(f"/d/{scene.vera}", headers=AGENT)
            seen = await http.get("/operator", headers=AGENT)
    assert set(re.findall(r"/d/([0-9a-z]+)", found.text)) == {scene.anna}
    assert set(re.findall(r"/d/([0-9a-z]+)", by_mail.text)) == {scene.boris}
    assert "delivered on viber" in story.text and "0.03" in story.text
    assert "irina" in call.text and "done" in call.text
    assert seen.status_code == 200
    assert "470" in seen.text and "&lt;script&gt;" in seen.text
    assert re.findall(r'<tr id="breaker-([a-z]+)">', seen.text)[0] == "wa"
