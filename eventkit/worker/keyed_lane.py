"""``KeyedLane``: one partition's records, the same key in order, different keys at once."""

from __future__ import annotations

import asyncio
from collections import deque
from heapq import heappop, heappush, merge
from itertools import islice
from operator import attrgetter
from typing import TYPE_CHECKING

from eventkit.delivery import Delivery
from eventkit.outcomes import Outcome
from eventkit.worker.inflight import InFlightLimit
from eventkit.worker.settling import Settling

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from eventkit.offsets import PartitionOffsets
    from eventkit.pipeline import Next
    from eventkit.ports import Clock, Record, TopicPartition
    from eventkit.worker.config import WorkerConfig
    from eventkit.worker.lane import LaneOwner, Progress

_DEFERRED = Outcome.DEFERRED
_offset_of = attrgetter("record.offset")

#: a record key; ``None`` (no key) is one key like any other
Key = bytes | None


class KeyedLane:
    """Runs one partition's records with ``key_concurrency`` long-lived runner tasks.

    A free runner takes the oldest queued record whose key is not running, so records of one
    key start one after another in offset order, and different keys run at once. Everything
    for one record runs in the runner that took it, so context variables flow from middleware
    to handler; no task is made per record. Records finish out of order: the partition's
    ``PartitionOffsets`` moves the commit position only over the finished prefix.

    A ``DEFERRED`` record keeps its key (nothing of that key starts behind it), stays
    unfinished, and keeps the partition paused until it is final; other keys carry on.

    A record whose DONE mark was queued frees its runner and its key at once; its offset
    finishes once the mark is written (``Settling``), by a claim, or by an idle runner.
    """

    def __init__(
        self,
        tp: TopicPartition,
        *,
        epoch: int,
        dispatch: Next,
        offsets: PartitionOffsets,
        owner: LaneOwner,
        progress: Progress,
        clock: Clock,
        config: WorkerConfig,
        limit: InFlightLimit | None = None,
    ) -> None:
        self.tp = tp
        self.epoch = epoch
        self._dispatch = dispatch
        self._offsets = offsets
        self._owner = owner
        self._clock = clock
        self._config = config
        self._limit = limit if limit is not None else InFlightLimit(config.max_in_flight)
        # records not started, per key, in offset order
        self._pending: dict[Key, deque[Delivery]] = {}
        # (offset of its first pending record, key) for every key with pending records that
        # is not running: a heap, so a runner takes the oldest startable record in O(log n)
        self._startable: list[tuple[int, Key]] = []
        # keys with a record started and not final (running, retrying or deferred)
        self._active: set[Key] = set()
        # keys whose running record is deferred: the partition stays paused while any is
        self._deferred: set[Key] = set()
        self._queued = 0
        # the record each runner holds, by runner index
        self._running: list[Delivery | None] = [None] * config.key_concurrency
        # runners that hold no record and wait for a worker-wide slot
        self._wanting_slot: set[int] = set()
        self._wake = asyncio.Event()
        self._settling = Settling(offsets, progress, clock, config)
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(index), name=f"eventkit-lane-{self.tp}-{index}")
            for index in range(len(self._running))
        ]

    def enqueue(self, records: Iterable[Record]) -> None:
        """Queue fetched records and track their offsets; pause when the buffer is full."""
        upcoming = self.upcoming
        deliveries = [Delivery(record, upcoming) for record in records]
        self._offsets.track_many([delivery.record.offset for delivery in deliveries])
        pending = self._pending
        active = self._active
        for delivery in deliveries:
            record = delivery.record
            key = record.key
            queue = pending.get(key)
            if queue is None:
                queue = pending[key] = deque()
                if key not in active:
                    heappush(self._startable, (record.offset, key))
            queue.append(delivery)
        self._queued += len(deliveries)
        self._wake.set()
        if self._queued >= self._config.max_buffered:
            self._owner.want_pause(self.tp, "backpressure", True)

    def upcoming(self, limit: int) -> Iterator[Delivery]:
        """The next ``limit`` queued deliveries, not started, in offset order.

        Keys held by a deferred record are left out: they may wait longer than a lease, so a
        claim taken ahead for them would expire before they run.
        """
        if limit <= 0 or not self._pending:
            return iter(())
        deferred = self._deferred
        queues = [
            queue for key, queue in self._pending.items() if not deferred or key not in deferred
        ]
        if len(queues) == 1:
            return islice(queues[0], limit)
        return islice(merge(*queues, key=_offset_of), limit)

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def busy(self) -> bool:
        """Whether a record is running, waiting to run again, or waiting for its mark."""
        return bool(self._active) or bool(self._settling)

    def take_unstarted(self) -> list[Delivery]:
        """Remove and return every queued delivery, in offset order (left for the next owner)."""
        taken = sorted(
            (delivery for queue in self._pending.values() for delivery in queue), key=_offset_of
        )
        self._pending.clear()
        self._startable.clear()
        self._queued = 0
        return taken

    def is_closing(self) -> bool:
        """Whether the lane was told to start no further record (a method: awaits change it)."""
        return self._closing

    def tasks(self) -> list[asyncio.Task[None]]:
        return list(self._tasks)

    def in_flight(self) -> list[Delivery]:
        running = [delivery for delivery in self._running if delivery is not None]
        return running + self._settling.deliveries()

    def close(self) -> None:
        """Start no further record; a record that only waits (back-off, defer) is cancelled."""
        self._closing = True
        self._wake.set()
        self._settling.interrupt()
        for index, task in enumerate(self._tasks):
            delivery = self._running[index]
            if delivery is None:
                if index in self._wanting_slot:
                    task.cancel()  # it holds no record, only waits for a worker-wide slot
                continue
            delivery.closing = True
            if delivery.waiting:
                task.cancel()

    async def _run(self, index: int) -> None:
        await self._run_records(index)
        # closing: one last try at the marks its finished records wait for
        await self._settling.settle_once()

    async def _run_records(self, index: int) -> None:
        startable = self._startable
        dispatch = self._dispatch
        limit = self._limit
        settling = self._settling
        while True:
            if self._closing:
                return
            # no more runners wait for a slot than there are records to start: a runner that
            # got a slot and found nothing would only pass it on, a turn of the loop per hop
            if len(startable) <= len(self._wanting_slot):
                if settling and not settling.settling:
                    # idle with marks queued: this runner writes them, the others wait
                    if not await settling.settle(self.is_closing):
                        return
                    continue
                self._wake.clear()
                await self._wake.wait()
                continue
            # the slot comes before the record, so a started record never waits for one
            if limit.running < limit.cap:
                limit.running += 1
            elif not await self._wait_for_slot(index):
                return
            if not startable:
                limit.release()  # another runner took the record while this one waited
                continue
            key, delivery = self._take(index)
            try:
                outcome = await dispatch(delivery)
                if outcome is _DEFERRED and not await self._retry_deferred(key, delivery):
                    return  # closing: the record stays unfinished for the next owner
            finally:
                # also when cancelled mid-record: a leaked slot would shrink the cap for good
                if limit.waiters:
                    limit.release()
                else:
                    limit.running -= 1
            self._finish(index, key, delivery)

    def _take(self, index: int) -> tuple[Key, Delivery]:
        """Start the oldest startable record in runner ``index``.

        Synchronous on purpose: the record moves from queued to running in one step, so a
        drain finds it in exactly one of the two.
        """
        _, key = heappop(self._startable)
        queue = self._pending[key]
        delivery = queue.popleft()
        if not queue:
            del self._pending[key]
        self._active.add(key)
        self._running[index] = delivery
        self._queued -= 1
        if self._queued == self._config.max_buffered // 2:
            self._owner.want_pause(self.tp, "backpressure", False)
        return key, delivery

    def _finish(self, index: int, key: Key, delivery: Delivery) -> None:
        """Mark a final record finished (or held for its queued DONE mark) and let its key's
        next record become startable."""
        self._settling.finish(delivery)
        self._running[index] = None
        self._active.discard(key)
        queue = self._pending.get(key)
        if queue:
            heappush(self._startable, (queue[0].record.offset, key))

    async def _wait_for_slot(self, index: int) -> bool:
        """Wait for a worker-wide slot; ``False``, holding none, if the lane closed meanwhile."""
        self._wanting_slot.add(index)
        try:
            await self._limit.wait()
        finally:
            self._wanting_slot.discard(index)
        if self._closing:
            self._limit.release()
            return False
        return True

    async def _retry_deferred(self, key: Key, delivery: Delivery) -> bool:
        """Hold ``key`` and pause the partition until the record is final; ``False`` if closing."""
        deferred = self._deferred
        if not deferred:
            self._owner.want_pause(self.tp, "deferred", True)
        deferred.add(key)
        consecutive = 0
        outcome = _DEFERRED
        while outcome is _DEFERRED:
            consecutive += 1
            delay = delivery.retry_after
            if delay is None:
                delay = self._config.defer_delay(consecutive)
            delivery.retry_after = None
            delivery.error = None
            if self.is_closing():
                return False
            # the records of other keys need not wait for their marks as long as it waits
            await self._settling.settle_once()
            if self.is_closing():  # closed while the marks were written
                return False
            delivery.waiting = True
            try:
                await self._clock.sleep(delay)
            finally:
                delivery.waiting = False
            if self.is_closing():
                return False
            outcome = await self._dispatch(delivery)
        deferred.discard(key)
        if not deferred:
            self._owner.want_pause(self.tp, "deferred", False)
        return True
