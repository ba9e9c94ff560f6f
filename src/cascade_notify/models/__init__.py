"""The public vocabulary: who, what, and what happened.

`Recipient` and `Message` are validated on construction and immutable.
`Delivery`, `Attempt` and `Receipt` are records of what happened; the store
owns them, and the copies a `Notifier` hands out are snapshots.
Times are kept as POSIX seconds (`*_ts`, cheap to store and compare) and shown
as aware `datetime`s (`*_at`).
"""

from __future__ import annotations

from cascade_notify.models._checks import (
    ADDRESS_LIMIT,
    ID_KEY_LIMIT,
    check_idempotency_key,
)
from cascade_notify.models.calls import OPEN_CALL, CallStatus, QueuedCall
from cascade_notify.models.channels import (
    CHANNEL_KINDS,
    CHANNELS,
    PHONE_CHANNELS,
    AddressKind,
    normalize_phone,
)
from cascade_notify.models.message import (
    Message,
)
from cascade_notify.models.recipient import (
    Recipient,
)
from cascade_notify.models.records import (
    DEFAULT_ROUTE,
    EXPLICIT_ROUTE,
    OPEN_ATTEMPT,
    Attempt,
    AttemptStatus,
    Delivery,
    DeliveryStatus,
    Order,
    Priority,
    Receipt,
    ReceiptStatus,
    Route,
    Signal,
    SignalKind,
    SkippedStep,
    Step,
    WaitFor,
    new_id,
    status_after,
)

__all__ = [
    "ADDRESS_LIMIT",
    "CHANNELS",
    "CHANNEL_KINDS",
    "DEFAULT_ROUTE",
    "EXPLICIT_ROUTE",
    "ID_KEY_LIMIT",
    "OPEN_ATTEMPT",
    "OPEN_CALL",
    "PHONE_CHANNELS",
    "AddressKind",
    "Attempt",
    "AttemptStatus",
    "CallStatus",
    "Delivery",
    "DeliveryStatus",
    "Message",
    "Order",
    "Priority",
    "QueuedCall",
    "Receipt",
    "ReceiptStatus",
    "Recipient",
    "Route",
    "Signal",
    "SignalKind",
    "SkippedStep",
    "Step",
    "WaitFor",
    "check_idempotency_key",
    "new_id",
    "normalize_phone",
    "status_after",
]
