"""``InFlightLimit``: the worker-wide cap on records running at once, over every lane."""

from __future__ import annotations

import asyncio
from collections import deque


class InFlightLimit:
    """At most ``cap`` records run at once; a lane holds a slot from start to final outcome.

    Below the cap a lane takes a slot inline, ``if limit.running < limit.cap: running += 1``,
    and gives it back with ``release()`` (or ``running -= 1`` when nobody waits): no awaited
    semaphore on the hot path. Only a lane that finds the cap reached awaits ``wait()``; a
    freed slot then goes straight to the longest waiter, so waiters are served in order and a
    newcomer never overtakes them.
    """

    __slots__ = ("cap", "running", "waiters")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.running = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def wait(self) -> None:
        """Wait for a slot (call it when ``running >= cap``); it is held on return."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # a slot was handed over as the waiter was cancelled: pass it on
            raise

    def release(self) -> None:
        """Give a slot back, to the first waiter still waiting if there is one."""
        waiters = self.waiters
        while waiters:
            future = waiters.popleft()
            if not future.done():  # cancelled waiters are skipped here, not searched for
                future.set_result(None)
                return
        self.running -= 1
