"""An in-memory broker that behaves like Kafka: the ``memory://`` transport and the test bus.

It keeps what the worker depends on: partitions chosen by Kafka's default partitioner
(``partitioner``: a key lands on the same partition index as on a real cluster), per-partition
offsets from 0 without gaps, committed offsets per consumer group, eager rebalances whose
listener calls run inside ``getmany`` (``memory_group``, ``memory_consumer``), and redelivery
of everything not committed. Fault seams make publishes and commits fail on demand.

Everything runs on one event loop and nothing is thread-safe. Retention, compaction,
transactions and ``max_poll_interval`` eviction are not modelled.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eventkit.errors import (
    CommitFailedError,
    ConfigurationError,
    PublisherNotStartedError,
    PublishError,
)
from eventkit.ports import TopicPartition
from eventkit.transports.memory_consumer import ConsumerCrashedError, MemoryConsumer
from eventkit.transports.memory_group import ConsumerGroup
from eventkit.transports.partitioner import default_partition, murmur2

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Collection, Mapping, Sequence

    from eventkit.ports import Headers, OutgoingRecord

__all__ = [
    "ConsumerCrashedError",
    "MemoryBroker",
    "MemoryConsumer",
    "MemoryPublisher",
    "StoredRecord",
    "UnknownTopicError",
    "default_partition",
    "murmur2",
]


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """One record in a partition log; satisfies the ``Record`` port."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


class UnknownTopicError(LookupError):
    """The topic does not exist and the broker does not create topics on first use."""


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class _PublishFault:
    error: Exception
    remaining: int | None


class MemoryBroker:
    """Topics, partition logs, consumer groups and committed offsets, in memory.

    ``auto_create_topics`` creates unknown topics with ``default_partitions`` on first publish
    or subscribe, like Kafka's ``auto.create.topics.enable``. ``now_ms`` stamps records
    (wall clock by default). Group members that do not rejoin a rebalance within
    ``rebalance_timeout`` seconds are evicted.
    """

    def __init__(
        self,
        *,
        default_partitions: int = 3,
        auto_create_topics: bool = True,
        now_ms: Callable[[], int] | None = None,
        rebalance_timeout: float = 10.0,
    ) -> None:
        if default_partitions < 1:
            raise ValueError("default_partitions must be at least 1")
        self.default_partitions = default_partitions
        self.auto_create_topics = auto_create_topics
        self._now_ms = now_ms or _wall_ms
        self._rebalance_timeout = rebalance_timeout
        self._logs: dict[str, tuple[list[StoredRecord], ...]] = {}
        self._keyless: dict[str, int] = {}
        self._committed: dict[tuple[str, TopicPartition], int] = {}
        self._groups: dict[str, ConsumerGroup] = {}
        self._publish_faults: dict[str | None, _PublishFault] = {}
        self._failing_commits: set[str] = set()
        self._held_publishes: dict[str | None, asyncio.Event] = {}
        self._member_ids = itertools.count(1)

    # -- topics ----------------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int | None = None) -> None:
        """Create ``name``; a no-op if it exists with that many partitions, else ``ValueError``."""
        count = self.default_partitions if partitions is None else partitions
        if count < 1:
            raise ValueError(f"topic {name!r} needs at least one partition, not {count}")
        existing = self._logs.get(name)
        if existing is not None:
            if len(existing) != count:
                raise ValueError(f"topic {name!r} exists with {len(existing)} partitions")
            return
        self._logs[name] = tuple([] for _ in range(count))
        for group in self._groups.values():
            group.topic_created(name)

    async def ensure_topics(self, topics: Collection[str]) -> None:
        """The ``TopicAdmin`` check: create missing topics if auto-creating, else raise."""
        missing = sorted(set(topics) - set(self._logs))
        if missing and not self.auto_create_topics:
            raise ConfigurationError(f"topics {missing} do not exist on the in-memory broker")
        for topic in missing:
            self.create_topic(topic)

    def topics(self) -> tuple[str, ...]:
        """The existing topics, sorted."""
        return tuple(sorted(self._logs))

    def partitions_for(self, topic: str) -> tuple[TopicPartition, ...]:
        """The partitions of ``topic`` in order; ``UnknownTopicError`` if it does not exist."""
        return tuple(TopicPartition(topic, p) for p in range(len(self._topic(topic))))

    # -- records ---------------------------------------------------------------------------

    def append(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Headers = (),
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> StoredRecord:
        """Write one record (no fault injection) and return it with its offset.

        Without ``partition``, a keyed record goes where Kafka's default partitioner puts it
        and keyless records go round-robin. Raises ``UnknownTopicError`` for an unknown topic
        when topics are not auto-created.
        """
        if topic not in self._logs and self.auto_create_topics:
            self.create_topic(topic)
        logs = self._topic(topic)
        if partition is None:
            partition = self._choose_partition(topic, key, len(logs))
        elif not 0 <= partition < len(logs):
            raise ValueError(f"topic {topic!r} has no partition {partition}")
        log = logs[partition]
        timestamp = self._now_ms() if timestamp_ms is None else timestamp_ms
        record = StoredRecord(
            topic, partition, len(log), timestamp, key, value, tuple((n, v) for n, v in headers)
        )
        log.append(record)
        for group in self._groups.values():
            group.notify_topic(topic)
        return record

    def records(self, topic: str, partition: int | None = None) -> list[StoredRecord]:
        """Every record of ``topic`` (partition by partition), or of one partition."""
        logs = self._topic(topic)
        if partition is not None:
            return list(logs[partition])
        return [record for log in logs for record in log]

    def end_offset(self, tp: TopicPartition) -> int:
        """The offset the next record of ``tp`` gets (its high-water mark)."""
        return len(self._log(tp))

    def committed(self, group_id: str, tp: TopicPartition) -> int | None:
        """The group's committed offset of ``tp``, or ``None`` if it never committed one."""
        return self._committed.get((group_id, tp))

    # -- clients ---------------------------------------------------------------------------

    def consumer(self, group_id: str, *, client_id: str | None = None) -> MemoryConsumer:
        """A new, unstarted member of ``group_id``."""
        return MemoryConsumer(self, group_id, client_id or "memory-consumer")

    def publisher(self) -> MemoryPublisher:
        """A new, unstarted publisher."""
        return MemoryPublisher(self)

    # -- fault seams -----------------------------------------------------------------------

    def fail_publishes(
        self, topic: str | None, error: Exception | None, *, times: int | None = None
    ) -> None:
        """Make sends to ``topic`` (every topic if ``None``) raise ``PublishError``.

        The ``PublishError`` is raised from ``error`` and nothing is written. ``times`` limits
        the failures to that many sends; ``error=None`` clears the fault for that ``topic`` key
        (a topic fault is checked before the all-topics fault).
        """
        if error is None:
            self._publish_faults.pop(topic, None)
        elif times is not None and times < 1:
            raise ValueError(f"times must be at least 1, not {times}")
        else:
            self._publish_faults[topic] = _PublishFault(error, times)

    def hold_publishes(self, topic: str | None, until: asyncio.Event | None) -> None:
        """Make sends to ``topic`` (every topic if ``None``) wait until ``until`` is set, as
        a slow broker would; ``until=None`` clears the hold for that ``topic`` key."""
        if until is None:
            self._held_publishes.pop(topic, None)
        else:
            self._held_publishes[topic] = until

    def fail_commits(self, group_id: str, enabled: bool) -> None:
        """While enabled, commits of ``group_id`` raise ``CommitFailedError`` and store nothing."""
        if enabled:
            self._failing_commits.add(group_id)
        else:
            self._failing_commits.discard(group_id)

    # -- used by MemoryPublisher and MemoryConsumer ----------------------------------------

    def _publish(self, topic: str, value: bytes, key: bytes | None, headers: Headers) -> None:
        for fault_key in (topic, None):
            fault = self._publish_faults.get(fault_key)
            if fault is None:
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining == 0:
                    del self._publish_faults[fault_key]
            raise PublishError(f"publish to {topic!r} failed: {fault.error}") from fault.error
        try:
            self.append(topic, value, key=key, headers=headers)
        except UnknownTopicError as exc:
            raise PublishError(str(exc)) from exc

    def _commit(self, group_id: str, member_id: str, offsets: Mapping[TopicPartition, int]) -> None:
        if group_id in self._failing_commits:
            raise CommitFailedError(f"commits of group {group_id!r} are failing (injected)")
        group = self._group(group_id)
        for tp in offsets:
            if not group.owns(member_id, tp):
                raise CommitFailedError(
                    f"group {group_id!r} fenced member {member_id}: it no longer owns {tp}"
                )
        for tp, offset in offsets.items():
            self._committed[group_id, tp] = offset

    def _group(self, group_id: str) -> ConsumerGroup:
        group = self._groups.get(group_id)
        if group is None:
            group = ConsumerGroup(
                group_id,
                partition_count=self._partition_count,
                rebalance_timeout=self._rebalance_timeout,
            )
            self._groups[group_id] = group
        return group

    def _new_member_id(self, client_id: str) -> str:
        # zero-padded so that member ids sort in join order, as the range assignor sorts them
        return f"{client_id}-{next(self._member_ids):06d}"

    def _subscribable(self, topic: str) -> None:
        # a consumer's metadata request creates the topic where the broker auto-creates
        if topic not in self._logs and self.auto_create_topics:
            self.create_topic(topic)

    def _log(self, tp: TopicPartition) -> list[StoredRecord]:
        logs = self._topic(tp.topic)
        if not 0 <= tp.partition < len(logs):
            raise ValueError(f"topic {tp.topic!r} has no partition {tp.partition}")
        return logs[tp.partition]

    def _topic(self, topic: str) -> tuple[list[StoredRecord], ...]:
        logs = self._logs.get(topic)
        if logs is None:
            raise UnknownTopicError(f"unknown topic {topic!r} (topic auto-creation is off)")
        return logs

    def _partition_count(self, topic: str) -> int:
        return len(self._logs.get(topic, ()))

    def _choose_partition(self, topic: str, key: bytes | None, partitions: int) -> int:
        if key is not None:
            return default_partition(key, partitions)
        turn = self._keyless.get(topic, 0)
        self._keyless[topic] = turn + 1
        return turn % partitions


class MemoryPublisher:
    """The ``Publisher`` port on a ``MemoryBroker``: a send returns once the record is stored.

    Raises ``PublisherNotStartedError`` before ``start`` and after ``stop``, and
    ``PublishError`` for injected faults or an unknown topic when topics are not auto-created.
    """

    __slots__ = ("_broker", "_running", "_stopped")

    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker
        self._running = False
        self._stopped = False

    async def start(self) -> None:
        self._running = True
        self._stopped = False

    async def stop(self) -> None:
        self._running = False
        self._stopped = True

    async def send(
        self, topic: str, value: bytes, *, key: bytes | None = None, headers: Headers = ()
    ) -> None:
        if not self._running:
            state = "was stopped" if self._stopped else "is not started (await start() first)"
            raise PublisherNotStartedError(f"cannot send to {topic!r}: the publisher {state}")
        held = self._broker._held_publishes
        if held:
            gate = held.get(topic) or held.get(None)
            if gate is not None:
                await gate.wait()
        self._broker._publish(topic, value, key, headers)

    async def send_many(self, records: Sequence[OutgoingRecord]) -> None:
        failures: list[PublishError] = []
        for record in records:
            try:
                await self.send(record.topic, record.value, key=record.key, headers=record.headers)
            except PublishError as exc:
                failures.append(exc)
        if failures:
            raise PublishError(
                f"{len(failures)} of {len(records)} records were not acknowledged: {failures[0]}"
            ) from failures[0]
