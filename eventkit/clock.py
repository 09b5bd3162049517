"""The system clock adapter."""

from __future__ import annotations

import asyncio
import time


class SystemClock:
    """Real time: ``time.time``, ``time.monotonic`` and ``asyncio.sleep``."""

    __slots__ = ()

    # the C functions themselves: no Python frame per call on the hot path
    now = staticmethod(time.time)
    monotonic = staticmethod(time.monotonic)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
