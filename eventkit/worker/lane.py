"""``Lane``: the task that runs one partition's records in order; ``PartitionLane``: what the
worker asks of any lane (this one, or ``KeyedLane`` for key-ordered partitions)."""

from __future__ import annotations

import asyncio
from collections import deque
from itertools import islice
from typing import TYPE_CHECKING, Protocol, cast

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


# an Enum member read through its class costs ~80 ns on CPython 3.11, a module global ~20
_DEFERRED = Outcome.DEFERRED


class LaneOwner(Protocol):
    """What a lane asks of its worker: pausing its partition."""

    def want_pause(self, tp: TopicPartition, reason: str, paused: bool) -> None: ...


class PartitionLane(Protocol):
    """What the worker asks of the lane of one owned partition, whatever its ordering.

    Every fetched record is, at any await point, in exactly one of three places: queued
    (``take_unstarted`` hands it back), started and not final (``in_flight``), or finished in
    the partition's ``PartitionOffsets``. Moving between them never awaits.
    """

    tp: TopicPartition
    epoch: int

    def start(self) -> None:
        """Create the lane's tasks (``tasks`` names them afterwards)."""
        ...

    def enqueue(self, records: Iterable[Record]) -> None:
        """Queue fetched records and track their offsets; pause when the buffer is full."""
        ...

    def upcoming(self, limit: int) -> Iterator[Delivery]:
        """Up to ``limit`` queued deliveries, not started, in the order they will start."""
        ...

    @property
    def queued(self) -> int: ...

    @property
    def busy(self) -> bool:
        """Whether a record is running or waiting to run again."""
        ...

    def take_unstarted(self) -> list[Delivery]:
        """Remove and return every queued delivery, in offset order."""
        ...

    def is_closing(self) -> bool: ...

    def close(self) -> None:
        """Start no further record; a record that only waits (back-off, defer) is cancelled."""
        ...

    def tasks(self) -> list[asyncio.Task[None]]:
        """The lane's tasks; each ends on its own once the lane is closed and idle."""
        ...

    def in_flight(self) -> list[Delivery]:
        """Deliveries started and not final (after a drain: the ones that were cut off)."""
        ...


class Progress:
    """Records finished over all lanes; lanes bump it without a call per record."""

    __slots__ = ("finished",)

    def __init__(self) -> None:
        self.finished = 0


class Lane:
    """Runs the records of one partition one after another, in one task.

    Every step of a record runs in this task, so context variables set by a middleware are
    seen by the handler. A ``DEFERRED`` record stays at the head: the partition pauses, the
    lane waits (on the clock, interruptibly) and runs the record again; nothing behind it
    starts meanwhile, so the committed position never passes it. A record holds one slot of
    the worker's ``InFlightLimit`` from its start to its final outcome.

    A record whose DONE mark was queued (``Settling``) leaves its slot and lets the next
    record start, but its offset finishes only once the mark is written; an idle or closing
    lane writes the marks it waits for itself.
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
        # shared by every lane of a worker; a lane of its own (benchmarks, tests) gets one
        self._limit = limit if limit is not None else InFlightLimit(config.max_in_flight)
        # fetched records wait as they came; a Delivery is made when one starts, or earlier
        # when the idempotency step claims ahead (upcoming): buffered records then cost the
        # garbage collector one tracked object less each, and none is made for nothing
        self._queue: deque[Delivery | Record] = deque()
        self._ready = asyncio.Event()
        self._closing = False
        self._wants_slot = False
        self._settling = Settling(offsets, progress, clock, config)
        self.current: Delivery | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"eventkit-lane-{self.tp}")

    def enqueue(self, records: Iterable[Record]) -> None:
        """Queue fetched records and track their offsets; pause when the buffer is full."""
        if not isinstance(records, list):
            records = list(records)
        self._offsets.track_many([record.offset for record in records])
        queue = self._queue
        queue.extend(records)
        self._ready.set()
        if len(queue) >= self._config.max_buffered:
            self._owner.want_pause(self.tp, "backpressure", True)

    def upcoming(self, limit: int) -> Iterator[Delivery]:
        """The next ``limit`` queued deliveries, not started yet (made now if need be)."""
        queue = self._queue
        for index in range(min(max(limit, 0), len(queue))):
            item = queue[index]
            if not isinstance(item, Delivery):
                # the delivery the claim is attached to is the one that will run
                queue[index] = Delivery(item, self.upcoming)
        return cast("Iterator[Delivery]", islice(queue, 0, max(limit, 0)))

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def busy(self) -> bool:
        """Whether a record is running, waiting to run again, or waiting for its mark."""
        return self.current is not None or bool(self._settling)

    def take_unstarted(self) -> list[Delivery]:
        """Remove and return every queued delivery (they are left for the next owner)."""
        upcoming = self.upcoming
        taken = [
            item if isinstance(item, Delivery) else Delivery(item, upcoming) for item in self._queue
        ]
        self._queue.clear()
        return taken

    def is_closing(self) -> bool:
        """Whether the lane was told to start no further record (a method: awaits change it)."""
        return self._closing

    def tasks(self) -> list[asyncio.Task[None]]:
        return [self.task] if self.task is not None else []

    def in_flight(self) -> list[Delivery]:
        held = self._settling.deliveries()
        return [self.current, *held] if self.current is not None else held

    def close(self) -> None:
        """Start no further record; a record that only waits (back-off, defer) is cancelled."""
        self._closing = True
        self._ready.set()
        self._settling.interrupt()
        current = self.current
        if current is None:
            if self._wants_slot and self.task is not None:
                self.task.cancel()  # it holds no record, only waits for a worker-wide slot
            return
        current.closing = True
        if current.waiting and self.task is not None:
            self.task.cancel()

    async def _run(self) -> None:
        await self._run_records()
        # closing: one last try at the marks its finished records wait for
        await self._settling.settle_once()

    async def _run_records(self) -> None:
        queue = self._queue
        dispatch = self._dispatch
        owner = self._owner
        limit = self._limit
        waiters = limit.waiters
        resume_at = self._config.max_buffered // 2
        upcoming = self.upcoming
        finish = self._settling.finish
        # the slot is kept over records run back to back (nothing awaits between them), so
        # the hot path pays for it once per run of records, not per record
        holding = False
        try:
            while True:
                if not queue:
                    if holding:
                        holding = False
                        limit.release()  # idle: the slot is free for other lanes
                    if not await self._idle():
                        return
                    continue
                if self._closing:
                    return
                if not holding:
                    # the slot comes before the record, so a started record never waits
                    if not await self._take_slot():
                        return
                    holding = True
                item = queue.popleft()
                # isinstance narrows the type with no call at run time (typing.cast is one)
                delivery = item if isinstance(item, Delivery) else Delivery(item, upcoming)
                self.current = delivery
                outcome = await dispatch(delivery)
                if outcome is _DEFERRED and not await self._retry_deferred(delivery):
                    return  # closing: the record stays unfinished for the next owner
                # final now, or once its queued DONE mark is written
                finish(delivery)
                self.current = None
                if waiters:
                    holding = False
                    limit.release()  # other lanes wait for a slot: take turns
                if len(queue) == resume_at:
                    owner.want_pause(self.tp, "backpressure", False)
        finally:
            # also when cancelled mid-record: a leaked slot would shrink the cap for good
            if holding:
                limit.release()

    async def _idle(self) -> bool:
        """Write the DONE marks the idle lane waits for, then wait for records; ``False`` once
        the lane closes (records whose marks were not written stay unfinished)."""
        settling = self._settling
        if self._closing:
            return False
        if settling and not await settling.settle(self.is_closing):
            return False
        if self.is_closing():  # closed while the marks were written: its wake-up is spent
            return False
        if not self._queue:  # records may have come while the marks were written
            self._ready.clear()
            await self._ready.wait()
        return True

    async def _take_slot(self) -> bool:
        """Take a worker-wide slot, waiting if the cap is reached; ``False``, holding none, if
        the lane closed meanwhile."""
        limit = self._limit
        if limit.running < limit.cap:
            limit.running += 1
            return True
        self._wants_slot = True
        try:
            await self._limit.wait()
        finally:
            self._wants_slot = False
        if self._closing:
            self._limit.release()
            return False
        return True

    async def _retry_deferred(self, delivery: Delivery) -> bool:
        """Hold the partition on a deferred record until it is final; ``False`` if closing."""
        owner = self._owner
        owner.want_pause(self.tp, "deferred", True)
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
            # the records before it need not wait for their marks as long as it waits
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
        owner.want_pause(self.tp, "deferred", False)
        return True
