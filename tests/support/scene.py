"""The support page's test scene: real cascades on fake providers and the fake clock.

Anna (Moscow) is reached on Viber after WhatsApp reported her message undeliverable;
Boris has only an e-mail; Mallory's WhatsApp failure comes with a hostile error text;
Vera has only a phone to call, and Irina from the call desk reached her; the WhatsApp
breaker is open, by hand, for an outage."""

from __future__ import annotations

from dataclasses import dataclass

from cascade_notify import Message, Notifier, Recipient
from cascade_notify.models import Receipt, ReceiptStatus
from cascade_notify.support import Grant, SupportRequest
from cascade_notify.testing import FakeClock, run_until_final

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
POLICY = """
default_region: RU
support: {show_text: true, hide_text_for: [medical]}
providers:
  wa:    {type: fake, channel: whatsapp, behavior: read, receipt_delay: 5s, cost: 0.01,
          overrides: {anna: fail_receipt, mallory: no_receipt}}
  viber: {type: fake, channel: viber, behavior: deliver, receipt_delay: 3s, cost: 0.02}
  mail:  {type: fake, channel: email, behavior: deliver}
  desk:  {type: call_queue}
policies:
  service:
    steps:
      - {channel: whatsapp, providers: [wa], timeout: 2m}
      - {channel: viber, providers: [viber]}
      - {channel: email, providers: [mail], wait_for: accepted}
      - {channel: call, providers: [desk], timeout: 1d}
"""
HOSTILE = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'
TYPED = "8 (916) 123-45-67"
ANNA_PHONE = "+79161234567"
#: Test tokens (at least 16 characters) and the roles they grant.
TOKENS = {"agent-token-0123456789": "agent", "operator-token-0123456789": "operator"}


@dataclass
class Scene:
    notifier: Notifier
    clock: FakeClock
    anna: str
    boris: str
    mallory: str
    vera: str


async def build(notifier: Notifier, clock: FakeClock) -> Scene:
    """Send the three deliveries and run them to their ends; open the WhatsApp breaker."""
    anna = await notifier.send(
        Recipient(id="anna", whatsapp=TYPED, viber="viber-anna", timezone="Europe/Moscow"),
        Message(text="Your parcel 12-345 has arrived"),
        idempotency_key="parcel-12-345",
    )
    await clock.advance(60)
    boris = await notifier.send(
        Recipient(id="boris", email="Boris@Example.com"),
        Message(text="Your test results are ready", category="medical"),
    )
    await clock.advance(60)
    mallory = await notifier.send(
        Recipient(id="mallory", whatsapp="+79031234567"), Message(text="hello")
    )
    await clock.advance(1)
    sent = await notifier.get(mallory.id)
    [attempt] = sent.attempts
    assert attempt.provider_message_id is not None
    await notifier.record_receipts(
        [
            Receipt(
                provider="wa",
                provider_message_id=attempt.provider_message_id,
                status=ReceiptStatus.FAILED,
                ts=clock.now(),
                code="470",
                error=HOSTILE,
                receipt_id="hostile-1",
            )
        ]
    )
    vera = await notifier.send(Recipient(id="vera", call="+79261234567"), Message(text="call"))
    await clock.advance(1)
    taken = await notifier.calls.claim("irina")
    assert taken is not None and taken.delivery_id == vera.id
    await notifier.calls.done(taken.task_id, note="reached her, she will come on Monday")
    await run_until_final(notifier, clock, [anna.id, boris.id, mallory.id, vera.id])
    await notifier.breakers.open("wa", 3600, reason="Meta outage since 10:00")
    return Scene(notifier, clock, anna.id, boris.id, mallory.id, vera.id)


def header_auth(request: SupportRequest) -> Grant | None:
    """The host app's login, as a test plays it: a bearer token names the role."""
    given = request.headers.get("authorization", "").removeprefix("Bearer ")
    role = TOKENS.get(given)
    if role is None:
        return None
    return Grant(role=role, user=f"{role} Olga", timezone="Asia/Yekaterinburg")  # type: ignore[arg-type]
