"""``Settling``: a lane's records whose handlers finished and whose DONE marks are queued."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from eventkit.errors import StoreUnavailableError

if TYPE_CHECKING:
    from collections.abc import Callable

    from eventkit.delivery import Delivery
    from eventkit.offsets import PartitionOffsets
    from eventkit.ports import Clock
    from eventkit.worker.config import WorkerConfig
    from eventkit.worker.lane import Progress


class Settling:
    """Holds finished records until their DONE marks are written, then finishes their offsets.

    The idempotency step queues a plain handler's DONE mark instead of writing it at once
    (``Delivery.unrecorded`` stays set); the mark goes with the next claim, or with a
    ``flush`` of the lease keeper. Until it is written (or refused as lost) the record is
    started and not final, so no commit passes it. Marks are written in the order they were
    queued, so the records finish from the oldest.
    """

    __slots__ = (
        "_clock",
        "_config",
        "_held",
        "_offsets",
        "_progress",
        "_settler",
        "_sweep",
        "_waiting",
    )

    def __init__(
        self, offsets: PartitionOffsets, progress: Progress, clock: Clock, config: WorkerConfig
    ) -> None:
        self._offsets = offsets
        self._progress = progress
        self._clock = clock
        self._config = config
        self._held: deque[Delivery] = deque()
        # the task writing the marks, and whether it only waits out a back-off
        self._settler: asyncio.Task[object] | None = None
        self._waiting = False
        # bound once: handed to every held record
        self._sweep = self.sweep

    def __len__(self) -> int:
        return len(self._held)

    def deliveries(self) -> list[Delivery]:
        return list(self._held)

    @property
    def settling(self) -> bool:
        """Whether a task of the lane is writing the marks now."""
        return self._settler is not None

    def finish(self, delivery: Delivery) -> None:
        """Finish a final record's offset, or hold it while its DONE mark is queued."""
        if delivery.unrecorded is None:
            self._offsets.finish(delivery.record.offset)
            self._progress.finished += 1
        else:
            # swept when the mark is written, whichever call writes it
            delivery.on_recorded = self._sweep
            self._held.append(delivery)
        if self._held:
            self.sweep()

    def sweep(self) -> None:
        """Finish every held record, from the oldest, whose mark was written."""
        held = self._held
        finish = self._offsets.finish
        swept = 0
        while held and held[0].unrecorded is None:
            finish(held.popleft().record.offset)
            swept += 1
        self._progress.finished += swept

    async def settle(self, closing: Callable[[], bool]) -> bool:
        """Write the marks of the held records, retrying with the worker's back-off while the
        store is unreachable; ``False`` if the lane closed before they were written."""
        self._settler = asyncio.current_task()
        try:
            consecutive = 0
            while self._held:
                if await self._flush():
                    consecutive = 0
                    continue
                consecutive += 1
                if closing():
                    return False
                self._waiting = True
                try:
                    await self._clock.sleep(self._config.defer_delay(consecutive))
                finally:
                    self._waiting = False
            return True
        finally:
            self._settler = None

    async def settle_once(self) -> None:
        """One attempt at writing the held records' marks (a closing lane makes no more)."""
        if self._held:
            await self._flush()

    def interrupt(self) -> None:
        """Cancel a back-off wait between attempts (the lane is closing)."""
        if self._waiting and self._settler is not None:
            self._settler.cancel()

    async def _flush(self) -> bool:
        """``True`` once the oldest held record's mark was written or refused as lost."""
        self.sweep()  # another call may have written them meanwhile
        if not self._held:
            return True
        keeper = self._held[0].lease_keeper
        # only the idempotency step queues marks, and it is the keeper of what it queued
        assert keeper is not None, "a record waits for its mark only under a lease keeper"
        try:
            await keeper.flush()
        except StoreUnavailableError:
            return False
        finally:
            self.sweep()
        return True
