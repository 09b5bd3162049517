"""``MemoryConsumer``: a consumer-group member of the in-memory broker (the ``Consumer`` port)."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from typing import TYPE_CHECKING

from eventkit.errors import CommitFailedError
from eventkit.transports.memory_group import GroupMember

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping

    from eventkit.ports import RebalanceListener, TopicPartition
    from eventkit.transports.memory import MemoryBroker, StoredRecord

logger = logging.getLogger("eventkit.transports.memory")


class ConsumerCrashedError(RuntimeError):
    """``getmany`` of a consumer after ``crash()``: the simulated process is dead."""


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"
    CRASHED = "crashed"


class MemoryConsumer:
    """A group member that behaves like an aiokafka consumer with manual, explicit commits.

    - ``start`` joins the group; every join or leave rebalances it eagerly. The listener is
      called inside ``getmany``: ``on_partitions_revoked`` with everything this consumer had
      (an empty set on its first join, as aiokafka does), then, once every member of the group
      has rejoined (or was evicted for missing the broker's ``rebalance_timeout``),
      ``on_partitions_assigned`` with the new partitions. ``getmany`` returns right after
      listener calls, with whatever records are already available. A ``getmany`` cancelled
      inside the revoke listener keeps the old assignment; the next one runs the revoke again.
    - After an assignment each partition starts at the group's committed offset (or 0, the
      earliest), and pause state is gone: partitions come back unpaused, as with aiokafka.
    - Listener exceptions are caught, logged and counted in ``listener_errors`` (aiokafka does
      the same); they never stop the rebalance.
    - ``commit`` raises ``CommitFailedError`` for a partition this consumer does not own, once
      the group moved it away (fencing), or while the broker fails the group's commits.
    - ``stop`` leaves the group without a revoke call, as aiokafka's ``stop`` does: records
      fetched and not committed go to the next owner. ``crash`` leaves the same way at once and
      makes later ``getmany`` calls raise ``ConsumerCrashedError``.
    """

    def __init__(self, broker: MemoryBroker, group_id: str, client_id: str) -> None:
        self._broker = broker
        self.group_id = group_id
        self.client_id = client_id
        self._member_id = ""
        self._topics: frozenset[str] = frozenset()
        self._listener: RebalanceListener | None = None
        self._state = _State.NEW
        self._known: frozenset[TopicPartition] = frozenset()
        self._order: tuple[TopicPartition, ...] = ()
        self._positions: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self._assigned_generation = -1
        self._awaiting_assignment = False
        self._signal = asyncio.Event()
        self._woken = False
        self._rotation = 0
        self._listener_errors = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, topics: Collection[str], listener: RebalanceListener) -> None:
        """Subscribe to ``topics`` and join the group; partitions arrive in ``getmany``."""
        if self._state is not _State.NEW:
            raise RuntimeError(f"consumer {self._member_id} was already started")
        if not topics:
            raise ValueError("a consumer needs at least one topic")
        for topic in topics:
            self._broker._subscribable(topic)
        self._topics = frozenset(topics)
        self._listener = listener
        self._state = _State.RUNNING
        self._join()

    async def stop(self) -> None:
        """Leave the group without calling the revoke listener; a waiting ``getmany`` returns."""
        if self._state is _State.RUNNING:
            self._state = _State.STOPPED
            self._leave()

    def crash(self) -> None:
        """Die at once: leave the group like ``stop``; later ``getmany`` calls raise."""
        if self._state in (_State.NEW, _State.RUNNING):
            self._leave()
        self._state = _State.CRASHED

    def wakeup(self) -> None:
        """Make a waiting ``getmany`` (or the next one) return without waiting further."""
        self._woken = True
        self._signal.set()

    # -- state -----------------------------------------------------------------------------

    @property
    def member_id(self) -> str:
        """The group member id ('' before ``start``); it changes if the group evicts us."""
        return self._member_id

    @property
    def listener_errors(self) -> int:
        """Rebalance listener calls that raised (caught and logged, never fatal)."""
        return self._listener_errors

    def assignment(self) -> frozenset[TopicPartition]:
        return self._known

    def paused(self) -> frozenset[TopicPartition]:
        return frozenset(self._paused)

    def position(self, tp: TopicPartition) -> int:
        """The offset the next fetch of ``tp`` starts at."""
        return self._positions[self._assigned(tp)]

    # -- fetching --------------------------------------------------------------------------

    async def getmany(
        self,
        timeout: float,  # noqa: ASYNC109 - the port's bounded poll, as the Kafka client's
        max_records: int,
    ) -> dict[TopicPartition, list[StoredRecord]]:
        """Run pending rebalance steps, then return up to ``max_records`` records.

        Records come from assigned, unpaused partitions, spread across them, each from its
        position on. With nothing to return it waits up to ``timeout`` seconds for records, a
        rebalance, ``stop`` or ``wakeup``, then returns ``{}``. Raises ``ConsumerCrashedError``
        after ``crash`` and ``RuntimeError`` before ``start``; returns ``{}`` after ``stop``.
        """
        if max_records < 1:
            raise ValueError(f"max_records must be at least 1, not {max_records}")
        if self._state is _State.NEW:
            raise RuntimeError("getmany() before start()")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self._signal.clear()
            changed = await self._rebalance_steps()
            if self._state is _State.CRASHED:
                raise ConsumerCrashedError(f"consumer {self._member_id} crashed")
            batch = self._fetch(max_records)
            if batch or changed or self._woken or self._state is not _State.RUNNING:
                self._woken = False
                return batch
            remaining = deadline - loop.time()
            if remaining <= 0:
                return {}
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._signal.wait()

    def _fetch(self, max_records: int) -> dict[TopicPartition, list[StoredRecord]]:
        ready = [
            tp
            for tp in self._order
            if tp not in self._paused and self._positions[tp] < self._broker.end_offset(tp)
        ]
        if not ready:
            return {}
        # rotate the starting partition so that small max_records never starve the last ones
        start = self._rotation % len(ready)
        self._rotation += 1
        ready = ready[start:] + ready[:start]
        batch: dict[TopicPartition, list[StoredRecord]] = {}
        remaining = max_records
        while remaining and ready:
            share = max(1, remaining // len(ready))
            still_ready = []
            for tp in ready:
                if not remaining:
                    break
                log = self._broker._log(tp)
                position = self._positions[tp]
                taken = log[position : position + min(share, remaining)]
                batch.setdefault(tp, []).extend(taken)
                self._positions[tp] = position + len(taken)
                remaining -= len(taken)
                if self._positions[tp] < len(log):
                    still_ready.append(tp)
            ready = still_ready
        return batch

    # -- partitions ------------------------------------------------------------------------

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        """Stop fetching ``partitions`` until resumed; raises ``ValueError`` if not assigned."""
        self._paused.update([self._assigned(tp) for tp in partitions])

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        """Fetch ``partitions`` again; raises ``ValueError`` if not assigned."""
        self._paused.difference_update([self._assigned(tp) for tp in partitions])
        self._signal.set()

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Make the next fetch of ``partition`` start at ``offset``."""
        if offset < 0:
            raise ValueError(f"cannot seek {partition} to negative offset {offset}")
        self._positions[self._assigned(partition)] = offset
        self._signal.set()

    def _assigned(self, tp: TopicPartition) -> TopicPartition:
        # aiokafka raises IllegalStateError here; a port-level ValueError says the same
        if tp not in self._known:
            raise ValueError(f"partition {tp} is not assigned to consumer {self._member_id}")
        return tp

    # -- offsets ---------------------------------------------------------------------------

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Store ``offsets`` (the next offset to read) for the group, all or none.

        Raises ``CommitFailedError`` when a partition is not assigned to this consumer, when
        the group already gave it to another member, or while commits are made to fail.
        Committing below the current committed offset is allowed, as in Kafka.
        """
        if self._state is not _State.RUNNING:
            raise CommitFailedError(f"consumer {self._member_id} is {self._state.value}")
        if not offsets:
            return
        for tp, offset in offsets.items():
            if offset < 0:
                raise ValueError(f"cannot commit negative offset {offset} for {tp}")
            if tp not in self._known:
                raise CommitFailedError(
                    f"partition {tp} is not assigned to consumer {self._member_id}"
                )
        self._broker._commit(self.group_id, self._member_id, offsets)

    async def committed(self, partition: TopicPartition) -> int | None:
        """The group's committed offset of ``partition``, whoever committed it."""
        return self._broker.committed(self.group_id, partition)

    # -- group membership ------------------------------------------------------------------

    def _join(self) -> None:
        self._member_id = self._broker._new_member_id(self.client_id)
        member = GroupMember(self._member_id, self._topics, self._signal.set)
        self._broker._group(self.group_id).join(member)

    def _leave(self) -> None:
        self._broker._group(self.group_id).leave(self._member_id)
        self._drop_assignment()
        self._signal.set()

    def _drop_assignment(self) -> None:
        self._known = frozenset()
        self._order = ()
        self._positions = {}
        self._paused = set()

    async def _rebalance_steps(self) -> bool:
        """Revoke and rejoin, then take the new assignment; ``True`` if a listener ran."""
        if not self._running():
            return False
        group = self._broker._group(self.group_id)
        if self._member_id not in group.members:  # evicted by the rebalance timeout
            self._join()
        ran = False
        if group.needs_rejoin(self._member_id):
            if self._awaiting_assignment:
                # already revoked for an earlier generation of this same rebalance
                group.rejoin(self._member_id)
            else:
                # the old assignment stays valid during the listener, so it may commit; if the
                # listener is cancelled the revoke did not happen and the next getmany redoes it
                await self._call(self._listener_of().on_partitions_revoked, self._known)
                self._awaiting_assignment = True
                self._drop_assignment()
                if self._running():
                    group.rejoin(self._member_id)
                ran = True
        assigned = group.assignment_of(self._member_id)
        fresh = assigned is not None and self._assigned_generation != group.generation
        if assigned is not None and fresh and self._running():
            self._assigned_generation = group.generation
            self._awaiting_assignment = False
            self._take(assigned)
            await self._call(self._listener_of().on_partitions_assigned, assigned)
            ran = True
        return ran

    def _take(self, assigned: frozenset[TopicPartition]) -> None:
        # eager protocol: positions restart at the committed offsets and pauses are gone
        self._known = assigned
        self._order = tuple(sorted(assigned))
        self._positions = {tp: self._broker.committed(self.group_id, tp) or 0 for tp in assigned}
        self._paused = set()

    def _running(self) -> bool:
        # a method, not an inline test: stop() and crash() change the state across awaits
        return self._state is _State.RUNNING

    def _listener_of(self) -> RebalanceListener:
        assert self._listener is not None, "started consumers have a listener"
        return self._listener

    async def _call(
        self,
        callback: Callable[[frozenset[TopicPartition]], Awaitable[None]],
        partitions: frozenset[TopicPartition],
    ) -> None:
        try:
            await callback(partitions)
        except Exception:
            # aiokafka logs and swallows listener errors; count them so tests can see them
            self._listener_errors += 1
            logger.exception(
                "rebalance listener %s failed in group %s", callback.__name__, self.group_id
            )
