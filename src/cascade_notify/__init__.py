"""cascade_notify: deliver a service message by cascade, so no blocked or broken
messenger ever loses it.

    notifier = Notifier.from_yaml("cascade.yaml")
    async with notifier:
        delivery = await notifier.send(recipient, message)
"""

from cascade_notify.errors import (
    CascadeError,
    DeliveryNotFound,
    IdempotencyConflict,
    LeaseLost,
    MessageError,
    NotRunning,
    PermanentError,
    PolicyError,
    PolicyIssue,
    ProviderError,
    RecipientError,
    RegistryError,
    StoreError,
    TransientError,
    UnknownOutcomeError,
    UnknownPolicy,
    UnreachableError,
    WaitTimeout,
)
from cascade_notify.events import Event
from cascade_notify.models import (
    Attempt,
    AttemptStatus,
    Delivery,
    DeliveryStatus,
    Message,
    Receipt,
    ReceiptStatus,
    Recipient,
    SkippedStep,
    Step,
    WaitFor,
)
from cascade_notify.notifier import Notifier
from cascade_notify.policy import Config, Policy, load_config
from cascade_notify.providers.base import Provider, SendRequest, SendResult
from cascade_notify.sync import SyncNotifier

__version__ = "0.1.0.dev0"

__all__ = [
    "Attempt",
    "AttemptStatus",
    "CascadeError",
    "Config",
    "Delivery",
    "DeliveryNotFound",
    "DeliveryStatus",
    "Event",
    "IdempotencyConflict",
    "LeaseLost",
    "Message",
    "MessageError",
    "NotRunning",
    "Notifier",
    "PermanentError",
    "Policy",
    "PolicyError",
    "PolicyIssue",
    "Provider",
    "ProviderError",
    "Receipt",
    "ReceiptStatus",
    "Recipient",
    "RecipientError",
    "RegistryError",
    "SendRequest",
    "SendResult",
    "SkippedStep",
    "Step",
    "StoreError",
    "SyncNotifier",
    "TransientError",
    "UnknownOutcomeError",
    "UnknownPolicy",
    "UnreachableError",
    "WaitFor",
    "WaitTimeout",
    "load_config",
]
