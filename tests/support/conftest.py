from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cascade_notify import Notifier
from cascade_notify.testing import FakeClock

from .scene import NOW, POLICY, Scene, build


@pytest.fixture
async def scene() -> AsyncIterator[Scene]:
    clock = FakeClock(start=NOW)
    async with Notifier.from_yaml(POLICY, clock=clock, store="memory://") as notifier:
        yield await build(notifier, clock)
