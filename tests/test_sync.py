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
