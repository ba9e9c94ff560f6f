"""Providers: the ways of sending on each channel, and the registry of their types."""

from cascade_notify.providers.base import (
    Provider,
    ProviderSettings,
    ReceiptSink,
    SendRequest,
    SendResult,
    WebhookRequest,
    WebhookResponse,
)

__all__ = [
    "Provider",
    "ProviderSettings",
    "ReceiptSink",
    "SendRequest",
    "SendResult",
    "WebhookRequest",
    "WebhookResponse",
]
