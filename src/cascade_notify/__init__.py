"""cascade_notify: deliver a service message by cascade, so no blocked or broken
messenger ever loses it.

    notifier = Notifier.from_yaml("cascade.yaml")
    async with notifier:
        delivery = await notifier.send(recipient, message)
"""

from cascade_notify.bulk import Send, SendFailure, SendManyResult
from cascade_notify.errors import (
    BatchItemError,
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
    ScheduleError,
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
    Priority,
    Receipt,
    ReceiptStatus,
    Recipient,
    SkippedStep,
    Step,
    WaitFor,
)
from cascade_notify.notifier import Notifier
from cascade_notify.observe import DeliveryQuery, QueryError, Stats, StatsRow
from cascade_notify.policy import Config, Policy, load_config
from cascade_notify.providers.base import Provider, SendRequest, SendResult
from cascade_notify.sync import SyncNotifier

__version__ = "0.1.0.dev0"

__all__ = [
    "Attempt",
    "AttemptStatus",
    "BatchItemError",
    "CascadeError",
    "Config",
    "Delivery",
    "DeliveryNotFound",
    "DeliveryQuery",
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
    "Priority",
    "Provider",
    "ProviderError",
    "QueryError",
    "Receipt",
    "ReceiptStatus",
    "Recipient",
    "RecipientError",
    "RegistryError",
    "ScheduleError",
    "Send",
    "SendFailure",
    "SendManyResult",
    "SendRequest",
    "SendResult",
    "SkippedStep",
    "Stats",
    "StatsRow",
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
