"""``FakeClock``: a ``Clock`` whose time moves only when a test says so.

Retry back-offs, lease expiry and commit intervals then run instantly and deterministically:
a task that calls ``sleep`` stays parked until ``advance`` moves time past its deadline.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

#: Wall-clock start, a fixed and recognisable instant (2023-11-14T22:13:20Z).
DEFAULT_EPOCH = 1_700_000_000.0

_Waiter = tuple[float, int, asyncio.Future[None]]


class FakeClock:
    """Test time: ``now`` and ``monotonic`` move together, and only through ``advance``.

    ``sleep(seconds)`` parks the calling task until time reaches ``monotonic() + seconds``;
    ``sleep`` of zero or less only yields to the event loop once. Waiters wake in deadline
    order (ties in the order they went to sleep). A cancelled sleeper leaves nothing behind.
    """

    __slots__ = ("_monotonic", "_now", "_sequence", "_waiters")

    def __init__(self, *, epoch: float = DEFAULT_EPOCH) -> None:
        self._now = epoch
        self._monotonic = 0.0
        self._waiters: list[_Waiter] = []
        self._sequence = itertools.count()

    def now(self) -> float:
        """Wall-clock seconds since the epoch; starts at ``epoch``."""
        return self._now

    def monotonic(self) -> float:
        """Seconds since the clock was made; starts at 0.0."""
        return self._monotonic

    async def sleep(self, seconds: float) -> None:
        """Return once ``advance`` has moved time ``seconds`` past now.

        Raises ``CancelledError`` if the sleeping task is cancelled; its waiter is removed.
        """
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter: _Waiter = (self._monotonic + seconds, next(self._sequence), future)
        heapq.heappush(self._waiters, waiter)
        try:
            await future
        finally:
            # cancelled before advance woke it: drop the waiter so it is not counted or woken
            if future.cancelled() or not future.done():
                self._discard(waiter)

    def advance(self, seconds: float) -> None:
        """Move both clocks forward and wake every sleeper whose deadline is reached.

        Raises ``ValueError`` for a negative step: time never goes backwards.
        """
        if seconds < 0:
            raise ValueError(f"cannot advance a clock by {seconds} seconds")
        self._move_to(self._monotonic + seconds)

    def advance_to_next(self) -> bool:
        """Advance exactly to the earliest sleeper's deadline; ``False`` if nobody sleeps."""
        deadline = self.next_deadline()
        if deadline is None:
            return False
        self._move_to(max(deadline, self._monotonic))
        return True

    def next_deadline(self) -> float | None:
        """The monotonic deadline of the earliest live sleeper, or ``None``."""
        waiters = self._waiters
        while waiters and waiters[0][2].done():
            heapq.heappop(waiters)
        return waiters[0][0] if waiters else None

    @property
    def sleepers(self) -> int:
        """How many tasks are parked in ``sleep``."""
        return sum(1 for _, _, future in self._waiters if not future.done())

    def _move_to(self, target: float) -> None:
        self._now += target - self._monotonic
        self._monotonic = target
        waiters = self._waiters
        while waiters and waiters[0][0] <= target:
            _, _, future = heapq.heappop(waiters)
            if not future.done():
                future.set_result(None)

    def _discard(self, waiter: _Waiter) -> None:
        for index, candidate in enumerate(self._waiters):
            if candidate is waiter:
                self._waiters.pop(index)
                heapq.heapify(self._waiters)
                return
