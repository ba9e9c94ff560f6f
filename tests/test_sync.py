"""SyncNotifier: the async core driven from plain synchronous code."""

from __future__ import annotations

import threading

import pytest

from cascade_notify import DeliveryNotFound, DeliveryStatus, Message, Recipient, SyncNotifier

POLICY = """
store: memory://
providers:
  wa: {type: fake, channel: whatsapp, behavior: unreachable}
  sms: {type: fake, channel: sms}
policies:
  p: {steps: [{channel: whatsapp, providers: [wa]}, {channel: sms, providers: [sms]}]}
"""


def test_sync_send_and_wait():
    """send/wait/get from a thread with no event loop, on the real clock."""
    assert threading.current_thread() is threading.main_thread()
    with SyncNotifier.from_yaml(POLICY) as notifier:
        delivery = notifier.send(
            Recipient(id="r", whatsapp="+79161234567", sms="+79161234567"), Message(text="hi")
        )
        final = notifier.wait(delivery.id, timeout=10)
        assert final.status is DeliveryStatus.DELIVERED
        assert final.channel == "sms"
        assert notifier.get(delivery.id).id == delivery.id
        assert len(notifier.providers["sms"].calls) == 1  # type: ignore[attr-defined]
        with pytest.raises(DeliveryNotFound):
            notifier.cancel("missing")


def test_sync_notifier_outside_with_is_a_clear_error():
    """Calling before entering the context says how to use it."""
    notifier = SyncNotifier.from_yaml(POLICY)
    with pytest.raises(RuntimeError, match="use `with notifier:`"):
        notifier.send(Recipient(id="r", sms="+79161234567"), Message(text="hi"))


def test_sync_handle_webhook_verifies_and_records():
    """A synchronous view (Flask, Django without ASGI) takes receipts through
    `SyncNotifier.handle_webhook`: a signed one is recorded, a forged one refused."""
    import json
    import time

    from webhook_harness import SECRET, receipt, sign

    policy = f"""
store: memory://
providers:
  app: {{type: webhook, url: "http://127.0.0.1:9/inbox", secret: {json.dumps(SECRET)}}}
policies:
  p: {{steps: [{{channel: app, providers: [app]}}]}}
"""
    body = receipt("m-404", "delivered")
    signed = sign(SECRET, "msg_sync_1", body, time.time())
    with SyncNotifier.from_yaml(policy) as notifier:
        answer = notifier.handle_webhook(
            "app", method="POST", url="http://h/receipts/app", headers=signed, body=body
        )
        assert answer.status == 200
        assert json.loads(answer.body) == {
            "status": "ok",
            "received": 1,
            "duplicates": 0,
            "unknown": 1,
        }
        forged = {**signed, "webhook-signature": "v1,AAAA"}
        refused = notifier.handle_webhook(
            "app", method="POST", url="http://h/receipts/app", headers=forged, body=body
        )
        assert refused.status == 401


def test_sync_breakers_by_hand():
    """`SyncNotifier.breakers` lists, opens and closes breakers through the portal: a send
    while WhatsApp's is open skips it, and after closing it goes to WhatsApp again."""
    from cascade_notify.testing import FakeClock

    policy = """
store: memory://
providers:
  wa: {type: fake, channel: whatsapp}
  sms: {type: fake, channel: sms}
policies:
  p:
    steps:
      - {channel: whatsapp, providers: [wa], wait_for: accepted}
      - {channel: sms, providers: [sms], wait_for: accepted}
"""
    clock = FakeClock()
    anna = Recipient(id="r", whatsapp="+79161234567", sms="+79161234567")
    with SyncNotifier.from_yaml(policy, clock=clock) as notifier:
        assert notifier.breakers.shared  # the memory store shares them within the process
        info = notifier.breakers.open("wa", "2h", reason="blocked in RU")
        assert (info.state, info.manual, info.until) == ("open", True, clock.now() + 7200)
        assert {b.provider: b.state for b in notifier.breakers.list()} == {
            "sms": "closed",
            "wa": "open",
        }
        skipped = notifier.wait(notifier.send(anna, Message(text="hi")).id)
        assert skipped.channel == "sms" and skipped.skipped[0].reason == "circuit_open"
        assert notifier.breakers.close("wa", reason="unblocked").state == "closed"
        back = notifier.wait(notifier.send(anna, Message(text="hi")).id)
        assert back.channel == "whatsapp"


def test_sync_breakers_outside_with_is_a_clear_error():
    """The breakers' verbs, like the others, say how to use the notifier when it is not running."""
    notifier = SyncNotifier.from_yaml(POLICY)
    with pytest.raises(RuntimeError, match="use `with notifier:`"):
        notifier.breakers.list()


def test_sync_notifier_hands_one_transport_to_every_http_provider() -> None:
    """`SyncNotifier(http=transport)`: the app channel posts on it, from the portal thread."""
    import base64

    import httpx

    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200)

    secret = "whsec_" + base64.b64encode(bytes(range(32))).decode()
    policy = f"""
providers:
  app: {{type: webhook, url: "http://app.invalid/inbox", secret: "{secret}"}}
policies:
  p: {{steps: [{{channel: app, providers: [app], wait_for: accepted}}]}}
"""
    with SyncNotifier.from_yaml(
        policy, store="memory://", http=httpx.MockTransport(answer)
    ) as notifier:
        delivery = notifier.send(Recipient(id="r", app="device"), Message(text="hi"))
        final = notifier.wait(delivery.id, timeout=10)
    assert final.status.value == "delivered" and seen == ["http://app.invalid/inbox"]
