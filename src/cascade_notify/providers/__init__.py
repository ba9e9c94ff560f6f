"""Providers: the ways of sending on each channel, and the registry of their types."""

from cascade_notify.providers.base import (
    Inbound,
    InboundSink,
    Provider,
    ProviderOverrides,
    ProviderSettings,
    SendRequest,
    SendResult,
    WebhookRequest,
    WebhookResponse,
)

__all__ = [
    "Inbound",
    "InboundSink",
    "Provider",
    "ProviderOverrides",
    "ProviderSettings",
    "SendRequest",
    "SendResult",
    "WebhookRequest",
    "WebhookResponse",
]
