"""A tiny provider written to docs/adding-a-provider.md: "Pager", a made-up HTTP API for
a company's own pager app. No extras needed (run: `python examples/pager_provider.py`).

It shows each part of the contract once:

- the shared HTTP base: `send()` builds the payload and reads the answer; the client,
  timeouts and transport errors are the base's (`HttpProvider.request`, `refusal`);
- typed overrides: `Message.overrides["pager"]["priority"]`, checked before anything
  is sent (a typo is a `MessageError` naming the channel and the key);
- a webhook with a custom answer: Pager wants the plain body `ACK`, and signs with a
  hex HMAC-SHA256 of the raw body (`providers/_signing.py`);
- a signal: a `muted` event means the customer turned Pager off: the address is gone,
  and later cascades skip it.

The API, as far as this example needs it:
    POST {api_url}/v1/pages  {"to", "text", "priority", "ref", "expires_at"}
      201 {"page_id"} | 404 {"error": "unknown_device"} | 429 + Retry-After | 5xx
    webhook POST, X-Pager-Signature: hex HMAC-SHA256(secret, body)
      {"event": "delivered"|"read"|"muted", "page_id", "ref", "device", "at"}
"""

from __future__ import annotations

import asyncio
import json
from typing import ClassVar, Literal

from pydantic import Field, SecretStr

from cascade_notify import UnreachableError
from cascade_notify.models import Receipt, ReceiptStatus, Signal, SignalKind
from cascade_notify.providers._http import HttpProvider, json_body
from cascade_notify.providers._signing import BadSignature, hmac_hex, same
from cascade_notify.providers.base import (
    Inbound,
    ProviderOverrides,
    ProviderSettings,
    SendRequest,
    SendResult,
    WebhookRequest,
    WebhookResponse,
)

_STATUSES = {"delivered": ReceiptStatus.DELIVERED, "read": ReceiptStatus.READ}


class PagerSettings(ProviderSettings):
    token: SecretStr
    secret: SecretStr
    api_url: str = "https://pager.example.com"
    timeout: float = Field(default=10.0, gt=0)


class PagerOverrides(ProviderOverrides):
    priority: Literal["low", "normal", "urgent"] = "normal"


class PagerProvider(HttpProvider):
    type_name = "pager"
    default_channel = "pager"
    receipts: ClassVar[frozenset[ReceiptStatus]] = frozenset(_STATUSES.values())
    max_length = 500
    signals: ClassVar[bool] = True
    webhook_methods = frozenset({"POST"})
    Settings = PagerSettings
    Overrides = PagerOverrides
    settings: PagerSettings

    async def send(self, request: SendRequest) -> SendResult:
        overrides = request.overrides
        assert isinstance(overrides, PagerOverrides)
        body = json_body(
            {
                "to": request.address,
                "text": request.text,
                "priority": overrides.priority,
                "ref": request.attempt_id,  # comes back in every event: no lookup needed
                "expires_at": request.deadline_ts,  # no stale page after the cascade moved on
            }
        )
        answer = await self.request(
            "POST",
            f"{self.settings.api_url.rstrip('/')}/v1/pages",
            content=body,
            headers={
                "authorization": f"Bearer {self.settings.token.get_secret_value()}",
                "content-type": "application/json",
            },
        )
        if answer.status == 201:
            return SendResult(str(answer.json()["page_id"]))
        if answer.status == 404:
            raise UnreachableError(answer.text(), provider=self.name, code="unknown_device")
        raise self.refusal(answer, f"HTTP {answer.status}: {answer.text()}")

    async def receive(self, request: WebhookRequest) -> Inbound:
        given = request.headers.get("x-pager-signature", "")
        expected = hmac_hex(self.settings.secret.get_secret_value().encode(), request.body)
        if not same(given, expected):
            raise BadSignature("X-Pager-Signature does not match")
        event = json.loads(request.body)
        ack = WebhookResponse.text("ACK")
        if event["event"] == "muted":
            muted = Signal(
                kind=SignalKind.GONE,
                channel=self.channel,
                address=event["device"],
                provider=self.name,
                reason="muted",
                ts=float(event["at"]),
            )
            return Inbound(signals=[muted], answer=ack)
        status = _STATUSES.get(event["event"])
        if status is None:
            return Inbound(answer=ack)  # an event we do not use: acknowledged all the same
        receipt = Receipt(
            provider=self.name,
            provider_message_id=event["page_id"],
            status=status,
            ts=float(event["at"]),
            attempt_id=event["ref"],
            receipt_id=f"{event['page_id']}:{event['event']}",
        )
        return Inbound(receipts=[receipt], answer=ack)


async def main() -> None:
    """Send one page through a stand-in for the Pager API, on a MockTransport."""
    import httpx

    from cascade_notify import Message, Notifier, Recipient
    from cascade_notify.providers import registry

    def pager_api(request: httpx.Request) -> httpx.Response:
        print("Pager API got:", request.content.decode())
        return httpx.Response(201, json={"page_id": "pg_1"})

    registry.register("pager", PagerProvider)
    policy = """
providers:
  pager: {type: pager, token: t0ken, secret: s3cret}
policies:
  notice: {steps: [{channel: pager, providers: [pager], wait_for: accepted}]}
"""
    async with Notifier.from_yaml(
        policy, store="memory://", http=httpx.MockTransport(pager_api)
    ) as notifier:
        delivery = await notifier.send(
            Recipient(id="c-1", addresses={"pager": "device-7"}),
            Message(text="Your parcel is here.", overrides={"pager": {"priority": "urgent"}}),
        )
        delivery = await notifier.wait(delivery.id, timeout=5)
        print(delivery.status, delivery.channel)  # delivered pager


if __name__ == "__main__":
    asyncio.run(main())
