"""examples/pager_provider.py, the provider of docs/adding-a-provider.md, through the
notifier: HTTP base, typed overrides, a signed webhook with its own answer, a signal."""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from cascade_notify import DeliveryStatus, Message, MessageError, Notifier, Recipient
from cascade_notify.providers import registry
from cascade_notify.testing import FakeClock, run_until_final

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "pager_provider.py"
POLICY = """
providers:
  pager: {type: pager, token: t0ken, secret: s3cret, api_url: "http://pager.invalid"}
  sms: {type: fake, channel: sms}
policies:
  notice:
    steps:
      - {channel: pager, providers: [pager], wait_for: read, timeout: 5m}
      - {channel: sms, providers: [sms], wait_for: delivered}
"""


@pytest.fixture
def pager() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("pager_provider", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["pager_provider"] = module
    spec.loader.exec_module(module)
    registry.register("pager", module.PagerProvider)
    yield module
    registry.unregister("pager")
    sys.modules.pop("pager_provider", None)


def signed(event: dict[str, object]) -> tuple[dict[str, str], bytes]:
    body = json.dumps(event).encode()
    return {"x-pager-signature": hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()}, body


async def test_the_example_provider_end_to_end(pager: ModuleType, fake_clock: FakeClock) -> None:
    """A page goes out with its typed priority and deadline; a signed `read` is answered
    `ACK` and ends the cascade; a bad signature is 401; `muted` makes the next cascade
    skip the pager; a typo in the overrides is refused before anything is sent."""
    pages: list[dict[str, object]] = []

    def api(request: httpx.Request) -> httpx.Response:
        pages.append(json.loads(request.content))
        return httpx.Response(201, json={"page_id": f"pg_{len(pages)}"})

    notifier = Notifier.from_yaml(
        POLICY, clock=fake_clock, store="memory://", http=httpx.MockTransport(api)
    )
    recipient = Recipient(id="c-1", addresses={"pager": "device-7"}, sms="+79161234567")
    async with notifier:
        with pytest.raises(MessageError, match=r"overrides\['pager'\]\.priority"):
            await notifier.send(
                recipient, Message(text="x", overrides={"pager": {"priority": "loud"}})
            )
        first = await notifier.send(
            recipient, Message(text="Parcel", overrides={"pager": {"priority": "urgent"}})
        )
        await fake_clock.advance(1)
        [page] = pages
        headers, body = signed(
            {"event": "read", "page_id": "pg_1", "ref": page["ref"], "device": "device-7", "at": 1}
        )
        forged = await notifier.handle_webhook(
            "pager", method="POST", url="http://h/r/pager", headers={}, body=body
        )
        answer = await notifier.handle_webhook(
            "pager", method="POST", url="http://h/r/pager", headers=headers, body=body
        )
        [done] = await run_until_final(notifier, fake_clock, [first.id])
        headers, body = signed({"event": "muted", "device": "device-7", "at": fake_clock.now()})
        muted = await notifier.handle_webhook(
            "pager", method="POST", url="http://h/r/pager", headers=headers, body=body
        )
        second = await notifier.send(recipient, Message(text="Again"))
        [again] = await run_until_final(notifier, fake_clock, [second.id])
    assert page["priority"] == "urgent" and page["text"] == "Parcel"
    assert isinstance(page["expires_at"], float) and page["expires_at"] > fake_clock.now() - 600
    assert (forged.status, answer.status, answer.body, muted.body) == (401, 200, b"ACK", b"ACK")
    assert done.status is DeliveryStatus.DELIVERED and done.channel == "pager"
    assert [s.reason for s in again.skipped] == ["address_gone"] and again.channel == "sms"
    assert len(pages) == 1
