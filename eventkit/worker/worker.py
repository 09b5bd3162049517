"""``Worker``: the fetch loop, the partition lanes, rebalances and the drain on stop."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from eventkit._crashpoints import crash_point
from eventkit._mutation import is_planted
from eventkit.offsets import OffsetTracker
from eventkit.worker.commits import Committer
from eventkit.worker.inflight import InFlightLimit
from eventkit.worker.keyed_lane import KeyedLane
from eventkit.worker.lane import Lane, PartitionLane, Progress

if TYPE_CHECKING:
    from eventkit.delivery import Delivery
    from eventkit.offsets import PartitionOffsets
    from eventkit.outcomes import Outcome
    from eventkit.pipeline import Next
    from eventkit.ports import Clock, Consumer, Record, TopicPartition
    from eventkit.worker.config import WorkerConfig

logger = logging.getLogger("eventkit.worker")

ReleaseUnstarted = Callable[[Iterable["Delivery"]], Awaitable[None]]


class Worker:
    """Consumes with one never-blocking fetch task and one lane per owned partition.

    A partition of a topic in ``key_ordered_topics`` gets a ``KeyedLane`` (the same key in
    order, different keys at once), any other a sequential ``Lane``; over all lanes at most
    ``config.max_in_flight`` records run at once.

    - The fetch task only polls, queues records into lanes and starts commits; backpressure
      and deferred records pause partitions, so polling never stops (R2). After a poll that
      returned records it yields once, so lanes take what was fetched before the next poll.
    - Commits carry explicit offsets of each partition's finished prefix (R3).
    - On revoke: the lanes stop starting records, in-flight ones drain up to a deadline, the
      rest are cancelled and their claims released, the prefix is committed, then the
      partition is forgotten (R6). Pauses are re-applied after every assignment.
    - ``stop`` drains the same way under ``drain_timeout`` and commits (R7).
    If the fetch task or a lane dies, ``failure`` holds the error and ``wait`` raises it.
    """

    def __init__(
        self,
        consumer: Consumer,
        dispatch: Next,
        *,
        topics: Collection[str],
        config: WorkerConfig,
        clock: Clock,
        release_unstarted: ReleaseUnstarted | None = None,
        background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
        key_ordered_topics: Collection[str] = frozenset(),
    ) -> None:
        self._consumer = consumer
        self._dispatch = dispatch
        self._topics = frozenset(topics)
        self._key_ordered = frozenset(key_ordered_topics)
        self._limit = InFlightLimit(config.max_in_flight)
        self._config = config
        self._clock = clock
        self._release_unstarted = release_unstarted
        self._background = tuple(background)
        self._background_tasks: list[asyncio.Task[None]] = []
        self._offsets = OffsetTracker()
        self._lanes: dict[TopicPartition, PartitionLane] = {}
        self._pause_reasons: dict[TopicPartition, set[str]] = {}
        self._epoch = 0
        self._fetch_task: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Future[bool] | None = None
        self._stopped = asyncio.Event()
        self._stopping = False
        self._clean = False
        self.failure: BaseException | None = None
        self.listener_errors = 0
        self.rebalances = 0
        self.progress = Progress()
        self.committer = Committer(
            consumer,
            self._offsets,
            config=config,
            clock=clock,
            owner_epoch=self._epoch_of,
            progress=self.progress,
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Join the group and start polling."""
        await self._consumer.start(self._topics, self)
        self._fetch_task = asyncio.create_task(self._fetch_loop(), name="eventkit-fetch")
        self._fetch_task.add_done_callback(self._task_done)
        for run in self._background:
            task = asyncio.create_task(run(), name=f"eventkit-{getattr(run, '__name__', 'task')}")
            task.add_done_callback(self._task_done)
            self._background_tasks.append(task)

    async def stop(self) -> bool:
        """Drain, commit and leave the group; ``True`` if every started record finished.

        A caller cancelled while waiting does not cancel the stop, which goes on; a later
        ``stop()`` waits for the same one, and ``abort()`` cuts it short.
        """
        if self._stop_task is None:
            if self._stopped.is_set():
                return self._clean  # aborted, or died and stopped already
            self._stop_task = asyncio.ensure_future(self._stop())
        return await asyncio.shield(self._stop_task)

    async def _stop(self) -> bool:
        self._stopping = True
        fetch = self._fetch_task
        if fetch is not None and not fetch.done():
            fetch.cancel()
            # wait, not await: a cancellation of stop() itself must not be swallowed here
            await asyncio.wait([fetch])
        clean = await self._drain(list(self._lanes), self._config.drain_timeout)
        await self.committer.wait_in_flight()
        await self.committer.commit(list(self._lanes))
        self._lanes.clear()
        await self._cancel_background()
        await self._consumer.stop()
        self._clean = clean
        self._stopped.set()
        return clean

    async def abort(self) -> None:
        """Stop at once: no drain and no commit (a second signal, or a simulated crash)."""
        self._stopping = True
        stopping = self._stop_task
        if stopping is not None and not stopping.done():
            stopping.cancel()
            await asyncio.gather(stopping, return_exceptions=True)
        tasks = [task for lane in self._lanes.values() for task in lane.tasks()]
        if self._fetch_task is not None:
            tasks.append(self._fetch_task)
        tasks.extend(self.committer.in_flight())
        tasks.extend(self._background_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._lanes.clear()
        await self._consumer.stop()
        self._stopped.set()

    async def _cancel_background(self) -> None:
        for task in self._background_tasks:
            task.cancel()
        await asyncio.gather(*self._background_tasks, return_exceptions=True)

    async def wait(self) -> None:
        """Return when the worker stopped; raise the error that killed it, if any."""
        await self._stopped.wait()
        if self.failure is not None:
            raise self.failure

    # -- state for tests and health ---------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._fetch_task is not None and not self._stopping and self.failure is None

    def owned(self) -> frozenset[TopicPartition]:
        return frozenset(self._lanes)

    def unfinished(self) -> int:
        """Records fetched and not final, over all owned partitions."""
        return self._offsets.unfinished()

    def busy(self) -> bool:
        """Whether any lane has a record queued or running."""
        return any(lane.busy or lane.queued for lane in self._lanes.values())

    def in_flight(self) -> int:
        """Records started and not final, over all lanes (at most ``max_in_flight``)."""
        return self._limit.running

    # -- the fetch loop -------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        consumer = self._consumer
        config = self._config
        drop_on_pause = is_planted("drop_on_pause")
        while not self._stopping:
            batches = await consumer.getmany(config.poll_timeout, config.max_records)
            for tp, records in batches.items():
                lane = self._lanes.get(tp)
                if lane is None:
                    # a record is never dropped: this means ownership moved under us
                    raise RuntimeError(f"records fetched for {tp} which has no lane")
                if drop_on_pause:
                    _planted_drop(records, lane, self._offsets.partition(tp), config)
                else:
                    lane.enqueue(records)
            self.committer.maybe_commit(self._lanes.keys())
            if batches:
                # a poll that had records does not suspend: give the lanes a turn before the
                # next, so the rest of a fetch waits in the client as bytes, not as Python
                # objects that every garbage collection pass would scan
                await asyncio.sleep(0)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        # the fetch loop and background tasks run until stop; ending earlier is a failure
        if task.cancelled() or self._stopping:
            return
        self._fail(task.exception() or RuntimeError(f"{task.get_name()} ended unexpectedly"))

    def _lane_done(self, lane: PartitionLane, task: asyncio.Task[None]) -> None:
        # lane tasks end normally when closed and are cancelled after a drain deadline
        if task.cancelled():
            if not lane.is_closing() and not self._stopping:
                self._fail(RuntimeError(f"the lane of {lane.tp} was cancelled"))
            return
        error = task.exception()
        if error is not None:
            self._fail(error)

    def _fail(self, error: BaseException) -> None:
        if self.failure is None:
            self.failure = error
            logger.error("eventkit consume task died", exc_info=error)
        self._stopped.set()

    # -- lanes call these ------------------------------------------------------------------

    def want_pause(self, tp: TopicPartition, reason: str, paused: bool) -> None:
        reasons = self._pause_reasons.setdefault(tp, set())
        was_paused = bool(reasons)
        if paused:
            reasons.add(reason)
        else:
            reasons.discard(reason)
        if tp not in self._lanes or was_paused == bool(reasons):
            return
        if reasons:
            self._consumer.pause([tp])
        else:
            self._consumer.resume([tp])

    # -- rebalance listener ----------------------------------------------------------------

    async def on_partitions_revoked(self, revoked: frozenset[TopicPartition]) -> None:
        self.rebalances += 1
        owned = [tp for tp in revoked if tp in self._lanes]
        if not owned:
            return
        if any(self._lanes[tp].in_flight() for tp in owned):
            crash_point("revoke_drain")
        try:
            await self._drain(owned, self._config.revoke_drain_timeout)
            await self.committer.wait_in_flight()
            await self.committer.commit(owned)
        except Exception:
            # Kafka clients swallow listener errors; count them so they are seen
            self.listener_errors += 1
            logger.exception("error in the partitions-revoked listener")
        finally:
            # whatever happened, these partitions are no longer ours
            for tp in owned:
                lane = self._lanes.pop(tp, None)
                if lane is not None:
                    for task in lane.tasks():
                        task.cancel()
                self._offsets.drop(tp)
                self.committer.forget(tp)
                self._pause_reasons.pop(tp, None)
            self._epoch += 1

    async def on_partitions_assigned(self, assigned: frozenset[TopicPartition]) -> None:
        if self._stopping:
            return  # the fetch loop is gone: a lane made now would never be drained
        try:
            self._epoch += 1
            for tp in assigned:
                if tp not in self._lanes:
                    kind = KeyedLane if tp.topic in self._key_ordered else Lane
                    lane: PartitionLane = kind(
                        tp,
                        epoch=self._epoch,
                        dispatch=_planted_dispatch(self._dispatch, self._offsets.partition(tp)),
                        offsets=self._offsets.partition(tp),
                        owner=self,
                        progress=self.progress,
                        clock=self._clock,
                        config=self._config,
                        limit=self._limit,
                    )
                    self._lanes[tp] = lane
                    lane.start()
                    for task in lane.tasks():
                        task.add_done_callback(functools.partial(self._lane_done, lane))
            # pause state does not survive a rebalance on every broker: apply it again
            wanted = [tp for tp in assigned if self._pause_reasons.get(tp)]
            if wanted:
                self._consumer.pause(wanted)
        except Exception:
            self.listener_errors += 1
            logger.exception("error in the partitions-assigned listener")

    def _epoch_of(self, tp: TopicPartition) -> int | None:
        lane = self._lanes.get(tp)
        return lane.epoch if lane is not None else None

    # -- draining --------------------------------------------------------------------------

    async def _drain(self, partitions: list[TopicPartition], deadline: float) -> bool:
        """Finish in-flight records of ``partitions`` within ``deadline``; cancel the rest."""
        lanes = [self._lanes[tp] for tp in partitions]
        for lane in lanes:
            lane.close()
        tasks = [task for lane in lanes for task in lane.tasks() if not task.done()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=deadline)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        # every lane task has ended, so nothing moves now: a record is queued, cut off, or final
        cut_off = [delivery for lane in lanes for delivery in lane.in_flight()]
        # the queued ones never started; a cancelled started one may still hold a lease
        leftovers = [delivery for lane in lanes for delivery in lane.take_unstarted()]
        leftovers.extend(cut_off)
        if self._release_unstarted is not None and leftovers:
            await self._release_unstarted(leftovers)
        return not cut_off


# -- planted bugs (eventkit._mutation): known ways to break R3, for the tests to catch --------


def _planted_drop(
    records: Sequence[Record], lane: PartitionLane, offsets: PartitionOffsets, config: WorkerConfig
) -> None:
    """``drop_on_pause``: records beyond the buffer are marked final and never run."""
    room = max(config.max_buffered - lane.queued, 0)
    lane.enqueue(records[:room])
    dropped = records[room:]
    offsets.track_many([record.offset for record in dropped])
    for record in dropped:
        offsets.finish(record.offset)


def _planted_dispatch(dispatch: Next, offsets: PartitionOffsets) -> Next:
    """``commit_before_finish``: a record counts as final as soon as it starts."""
    if not is_planted("commit_before_finish"):
        return dispatch

    async def finish_first(delivery: Delivery) -> Outcome:
        offsets.finish(delivery.record.offset)
        return await dispatch(delivery)

    return finish_first
