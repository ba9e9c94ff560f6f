"""Test helpers for applications that use cascade_notify (and for its own tests).

- `FakeClock`: time that moves when told; `await clock.advance(600)` runs ten
  minutes of timers in milliseconds.
- `FakeProvider`: `type: fake` in YAML, for any channel; records every call.
- `run_until_final`: drive a notifier on a fake clock until deliveries end.
- pytest fixtures `fake_clock` and `notifier_factory` (plugin `cascade_notify`).
"""

from cascade_notify.providers.fake import FakeCall, FakeProvider, FakeSettings
from cascade_notify.testing.clock import FakeClock
from cascade_notify.testing.helpers import run_until_final

__all__ = ["FakeCall", "FakeClock", "FakeProvider", "FakeSettings", "run_until_final"]
