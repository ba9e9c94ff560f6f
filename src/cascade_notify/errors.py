"""Every error the library raises, under one root.

```
CascadeError
├── PolicyError              a policy file or mapping is wrong (carries every issue found)
├── RecipientError           a recipient is invalid (names the field), or no step of the
│                            policy can reach it; also ValueError
├── MessageError             a message cannot be sent as given; also ValueError
├── IdempotencyConflict      an idempotency key reused for another recipient, message or
│                            policy (names the delivery that holds it); also ValueError
├── RegistryError            unknown provider type, or two plugins claim one name
├── UnknownPolicy            no policy of that name (names the known ones); also KeyError
├── NotRunning               a verb on a notifier that is not started; also RuntimeError
├── DeliveryNotFound         no delivery with that id; also KeyError
├── WaitTimeout              wait() gave up before the delivery ended; also TimeoutError
├── StoreError               the store cannot be reached or refused a write
│   └── LeaseLost            another worker owns this delivery now (fencing)
└── ProviderError            a provider call failed; carries `provider`, `code`
    ├── TransientError       try the same provider again later (`retry_after` if it said when)
    ├── PermanentError       this request can never succeed here (`account=True`: nothing will)
    ├── UnreachableError     the recipient cannot be reached on this channel (`gone`: for good)
    └── UnknownOutcomeError  the request went out and the answer was lost: it may have been sent
```

Whether to retry is decided by the class alone; where it happened travels as
attributes (`provider`, `code`), never as a subclass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class CascadeError(Exception):
    """The root of every error raised by cascade_notify."""


@dataclass(frozen=True, slots=True)
class PolicyIssue:
    """One problem found in a policy: where it is and what is wrong."""

    path: str
    message: str
    source: str | None = None
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = self.source or "<policy>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.message}"


class PolicyError(CascadeError):
    """A policy was refused. `issues` lists every problem, not just the first."""

    def __init__(self, issues: Sequence[PolicyIssue]) -> None:
        self.issues = list(issues)
        count = len(self.issues)
        head = f"{count} error{'s' if count != 1 else ''} in cascade policy"
        super().__init__(head + "\n" + "\n".join(f"  {issue}" for issue in self.issues))


class RecipientError(CascadeError, ValueError):
    """A recipient field holds an invalid value; `field` names it. `field` empty: the
    recipient as a whole is at fault (no step of the policy can reach it)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"Recipient.{field}: {message}" if field else message)


class MessageError(CascadeError, ValueError):
    """A message cannot be sent as given; `field` names the field where one is at fault."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class IdempotencyConflict(CascadeError, ValueError):
    """An idempotency key came back with another recipient, message or policy than the
    delivery it made; `delivery_id` names that delivery, `key` the key. Nothing was sent."""

    def __init__(self, key: str, delivery_id: str, differs: str) -> None:
        self.key = key
        self.delivery_id = delivery_id
        self.differs = differs
        super().__init__(
            f"idempotency key {key!r} was first used for delivery {delivery_id} with another "
            f"{differs}; a key stands for one send: use a new key for a new message"
        )


class UnknownPolicy(CascadeError, KeyError):
    """No policy has the given name; `known` lists those there are."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.name = name
        self.known = list(known)
        super().__init__(f"unknown policy {name!r}; this notifier has: {', '.join(self.known)}")

    def __str__(self) -> str:
        return str(self.args[0])


class NotRunning(CascadeError, RuntimeError):
    """A verb that needs a running notifier was called before `start()` (or after
    `stop()`): use `async with notifier:` (or `with SyncNotifier(...)`)."""


class RegistryError(CascadeError):
    """A provider type is unknown, cannot be imported, or is claimed twice."""


class DeliveryNotFound(CascadeError, KeyError):
    """No delivery exists with the given id."""

    def __init__(self, delivery_id: str) -> None:
        self.delivery_id = delivery_id
        super().__init__(f"no delivery with id {delivery_id!r}")

    def __str__(self) -> str:
        return str(self.args[0])


class WaitTimeout(CascadeError, TimeoutError):
    """`Notifier.wait` timed out; the delivery goes on."""


class StoreError(CascadeError):
    """The store could not do what was asked; nothing was half-written."""


class LeaseLost(StoreError):
    """This worker's lease on a delivery was taken over; its write was refused."""


class ProviderError(CascadeError):
    """A provider call failed. Subclasses say what the engine does about it."""

    def __init__(self, message: str, *, provider: str | None = None, code: str | None = None):
        self.provider = provider
        self.code = code
        super().__init__(message)

    def __str__(self) -> str:
        text = str(self.args[0]) if self.args else type(self).__name__
        if self.code is not None:
            text = f"{text} (code {self.code})"
        if self.provider is not None:
            text = f"{self.provider}: {text}"
        return text


class TransientError(ProviderError):
    """Worth retrying on the same provider, after `retry_after` seconds if given."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, provider=provider, code=code)


class PermanentError(ProviderError):
    """Retrying cannot help. `account=True` means the provider is unusable for everyone."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        code: str | None = None,
        account: bool = False,
    ) -> None:
        self.account = account
        super().__init__(message, provider=provider, code=code)


class UnreachableError(ProviderError):
    """The recipient cannot be reached on this channel (not a user, blocked, opted out).

    `gone` names why the address is unusable from now on, for every later cascade
    (`blocked`, `unsubscribed`, `bot_stopped`): the notifier remembers it in a store that
    keeps addresses. None: only this message could not reach it.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        code: str | None = None,
        gone: str | None = None,
    ) -> None:
        self.gone = gone
        super().__init__(message, provider=provider, code=code)


class UnknownOutcomeError(ProviderError):
    """The request may have reached the provider; resending could deliver twice."""
