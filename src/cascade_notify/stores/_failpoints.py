"""Crash points for fault tests: the process SIGKILLs itself where the environment says.

`CASCADE_NOTIFY_FAILPOINTS=timer.before` kills the process the first time a
store is about to write a timer; `attempt.after@3` the third time an attempt
has just been recorded. Several points are separated by commas. Unset (as in
production) every check is one dictionary look-up that finds nothing.

The points sit in the SQL stores, on each path of the cascade, `before` the
write (nothing of it stored) and `after` it (stored, the caller not told):

| path | the write |
|---|---|
| `send` | `create`: a delivery `send()` persists |
| `claim` | a worker leases due deliveries |
| `attempt` | an attempt is recorded as `sending`, right before the provider request |
| `timer` | a step waits: an outcome and the deadline it waits for, or a retry time |
| `finish` | the delivery ends |
| `receipt` | receipts are recorded and wake their deliveries |

The outbox sender (`cascade_notify.outbox`) has two more, `outbox.before` (an event
leased, its POST not made) and `outbox.after` (its 2xx in, not yet marked sent).

An `attempt`, `timer` or `finish` write may also carry the outcome of the
provider request made just before it: `*.before` there is the "request sent,
outcome not recorded" window, the one place a crash leaves an attempt's outcome
unknown.
"""

from __future__ import annotations

import os
import signal

from cascade_notify.models import AttemptStatus
from cascade_notify.stores.base import Transition

ENV = "CASCADE_NOTIFY_FAILPOINTS"
PATHS = ("send", "claim", "attempt", "timer", "finish", "receipt")
#: Every failpoint there is; a fault test must have a case for each.
FAILPOINTS = tuple(f"{path}.{when}" for path in PATHS for when in ("before", "after"))
#: The outbox sender's (`cascade_notify.outbox`): right before an event's POST (leased,
#: nothing posted), and after its 2xx (posted, not yet marked sent: it is posted again).
OUTBOX_FAILPOINTS = ("outbox.before", "outbox.after")


def _armed(spec: str) -> dict[str, int]:
    armed: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, nth = item.partition("@")
        if name not in FAILPOINTS + OUTBOX_FAILPOINTS:
            known = ", ".join(FAILPOINTS + OUTBOX_FAILPOINTS)
            raise ValueError(f"{ENV}: unknown failpoint {name!r}; known: {known}")
        armed[name] = int(nth or "1")
    return armed


_ARMED = _armed(os.environ.get(ENV, ""))


def hit(name: str) -> None:
    """Die by SIGKILL here if `name` is armed and this is its turn."""
    if name in _ARMED:
        _ARMED[name] -= 1
        if _ARMED[name] == 0:
            os.kill(os.getpid(), signal.SIGKILL)


def path_of(transition: Transition) -> str:
    """Which path a commit is on: `attempt`, `finish` or `timer`."""
    if transition.status is not None:
        return "finish"
    if any(a.status is AttemptStatus.SENDING for a in transition.attempts):
        return "attempt"
    return "timer"
