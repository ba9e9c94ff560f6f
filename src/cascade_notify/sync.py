"""`SyncNotifier`: the same verbs for synchronous code (Django, Flask, scripts).

It runs one `Notifier` on an event loop in a portal thread (anyio's blocking
portal) and forwards each call to it: the same engine, not a second one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from anyio.from_thread import BlockingPortal, start_blocking_portal

from cascade_notify import webhooks
from cascade_notify.clock import Clock
from cascade_notify.errors import NotRunning
from cascade_notify.models import Delivery, Message, Receipt, Recipient
from cascade_notify.notifier import Notifier
from cascade_notify.policy import Config
from cascade_notify.providers.base import Provider, WebhookResponse
from cascade_notify.resilience import BreakerInfo
from cascade_notify.stores.base import ReceiptResult, Store

if TYPE_CHECKING:
    from cascade_notify.providers._http import HttpClient


class SyncNotifier:
    """Use as `with SyncNotifier.from_yaml("cascade.yaml") as notifier: notifier.send(...)`."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        store: Store | str | None = None,
        worker: bool = True,
        providers: Mapping[str, Provider] | None = None,
        http: HttpClient | None = None,
    ) -> None:
        """As `Notifier`'s; `http` is best a transport (an `httpx.AsyncClient` belongs to
        the event loop it is used in, and the notifier runs in the portal's)."""
        self._kwargs: dict[str, Any] = {
            "clock": clock,
            "store": store,
            "worker": worker,
            "providers": providers,
            "http": http,
        }
        self.config = config
        self._portal_cm: AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        self._notifier: Notifier | None = None
        #: List, open and close circuit breakers by hand (`Notifier.breakers`, synchronous).
        self.breakers = SyncBreakers(self)

    @classmethod
    def from_yaml(
        cls,
        source: str | os.PathLike[str],
        *,
        clock: Clock | None = None,
        store: Store | str | None = None,
        worker: bool = True,
        env: Mapping[str, str] | None = None,
        http: HttpClient | None = None,
    ) -> Self:
        from cascade_notify.policy import load_config

        config = load_config(source, env=env)
        return cls(config, clock=clock, store=store, worker=worker, http=http)

    @property
    def notifier(self) -> Notifier:
        """The async notifier underneath (runs in the portal thread)."""
        if self._notifier is None:
            raise NotRunning("the notifier is not running; use `with notifier:`")
        return self._notifier

    @property
    def providers(self) -> Mapping[str, Provider]:
        return self.notifier.providers

    def _call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        if self._portal is None:
            raise NotRunning("the notifier is not running; use `with notifier:`")
        return self._portal.call(lambda: func(*args, **kwargs))

    def start(self) -> None:
        if self._portal is not None:
            return
        self._portal_cm = start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        self._notifier = self._portal.call(lambda: _build(self.config, self._kwargs))
        try:
            self._call(self._notifier.start)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        try:
            if self._notifier is not None and self._portal is not None:
                self._call(self._notifier.stop)
        finally:
            self._notifier = None
            if self._portal_cm is not None:
                self._portal_cm.__exit__(None, None, None)
            self._portal_cm = None
            self._portal = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def send(
        self,
        recipient: Recipient,
        message: Message,
        *,
        policy: str | None = None,
        idempotency_key: str | None = None,
    ) -> Delivery:
        result: Delivery = self._call(
            self.notifier.send,
            recipient,
            message,
            policy=policy,
            idempotency_key=idempotency_key,
        )
        return result

    def wait(self, delivery_id: str, timeout: float | None = None) -> Delivery:
        result: Delivery = self._call(self.notifier.wait, delivery_id, timeout)
        return result

    def get(self, delivery_id: str) -> Delivery:
        result: Delivery = self._call(self.notifier.get, delivery_id)
        return result

    def cancel(self, delivery_id: str) -> Delivery:
        result: Delivery = self._call(self.notifier.cancel, delivery_id)
        return result

    def link(
        self,
        channel: str,
        recipient_id: str,
        *,
        provider: str | None = None,
        ttl: float | None = None,
    ) -> str:
        """`Notifier.link`: the deep link that links a customer's account on `channel`."""
        return self.notifier.link(channel, recipient_id, provider=provider, ttl=ttl)

    def addresses(self, recipient_id: str) -> dict[str, str]:
        """`Notifier.addresses`: the addresses linked to `recipient_id`."""
        result: dict[str, str] = self._call(self.notifier.addresses, recipient_id)
        return result

    def forget(self, recipient_id: str) -> int:
        """`Notifier.forget`: erase what the store remembers of `recipient_id`'s addresses."""
        result: int = self._call(self.notifier.forget, recipient_id)
        return result

    def record_receipts(self, receipts: Sequence[Receipt]) -> list[ReceiptResult]:
        result: list[ReceiptResult] = self._call(self.notifier.record_receipts, receipts)
        return result

    def handle_webhook(
        self,
        provider_name: str,
        *,
        method: str,
        url: str,
        headers: webhooks.Headers,
        body: bytes,
        max_body: int = webhooks.MAX_BODY,
    ) -> WebhookResponse:
        """`Notifier.handle_webhook` for a synchronous view (Flask, Django without ASGI):
        verify, parse and record one webhook request; return the answer to give."""
        result: WebhookResponse = self._call(
            self.notifier.handle_webhook,
            provider_name,
            method=method,
            url=url,
            headers=headers,
            body=body,
            max_body=max_body,
        )
        return result


class SyncBreakers:
    """`Notifier.breakers` for synchronous code: each verb runs on the portal's notifier."""

    def __init__(self, owner: SyncNotifier) -> None:
        self._owner = owner

    @property
    def shared(self) -> bool:
        """Whether changes go through the store to the other notifiers on it."""
        return self._owner.notifier.breakers.shared

    def list(self) -> list[BreakerInfo]:
        """Every provider's breaker, as the notifiers on the store see it."""
        result: list[BreakerInfo] = self._owner._call(self._owner.notifier.breakers.list)
        return result

    def open(
        self, provider: str, duration: float | str, *, reason: str | None = None
    ) -> BreakerInfo:
        """Open `provider`'s breaker for `duration` (seconds, or e.g. "2h"); then it probes."""
        result: BreakerInfo = self._owner._call(
            self._owner.notifier.breakers.open, provider, duration, reason=reason
        )
        return result

    def close(self, provider: str, *, reason: str | None = None) -> BreakerInfo:
        """Close `provider`'s breaker now: sends go to it again."""
        result: BreakerInfo = self._owner._call(
            self._owner.notifier.breakers.close, provider, reason=reason
        )
        return result


async def _build(config: Config, kwargs: dict[str, Any]) -> Notifier:
    return Notifier(config, **kwargs)
