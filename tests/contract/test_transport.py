"""The transport contract: every adapter of ``Consumer`` and ``Publisher`` must pass it unchanged.

Written once against the ports. ``transport`` yields a harness per adapter (the in-memory
broker, and the aiokafka transport against the real test broker), so the tests speak to
``Consumer``/``Publisher`` and to the harness, never to adapter internals.
Every test uses its own topics and groups. Listener calls with an empty revoke are ignored
(aiokafka makes one on the first join; other clients do not).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from typing import TYPE_CHECKING, Protocol

import pytest

from eventkit.errors import CommitFailedError, PublisherNotStartedError
from eventkit.ports import TopicPartition
from eventkit.transports.kafka import KafkaConsumer
from eventkit.transports.kafka_publisher import KafkaPublisher
from eventkit.transports.memory import MemoryBroker
from tests.brokers import client_settings, create_topic, read_topic

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Collection

    from eventkit.ports import Consumer, Publisher, Record

#: Long enough for a real broker's group join; the memory broker returns as soon as it holds.
WAIT = 20.0
POLL_TIMEOUT = 0.05


# --- the harness ------------------------------------------------------------------------------


class TransportHarness(Protocol):
    """One transport under test: topics, a started publisher, consumers and ground truth."""

    @property
    def publisher(self) -> Publisher:
        """A started publisher."""
        ...

    async def create_topic(self, name: str, partitions: int) -> None: ...

    def new_publisher(self) -> Publisher:
        """A publisher that is not started yet (closed at teardown if the test starts it)."""
        ...

    def new_consumer(self, group_id: str) -> Consumer:
        """A consumer of ``group_id``, not started, earliest reset, no auto-commit."""
        ...

    async def read_back(self, topic: str) -> list[Record]:
        """Every record of ``topic``, read from the broker (the ground truth)."""
        ...

    async def wait_until(
        self,
        predicate: Callable[[], bool],
        timeout: float = WAIT,  # noqa: ASYNC109 - a deadline for a predicate, not for an await
    ) -> None:
        """Return once ``predicate()`` holds; fail the test after ``timeout`` seconds."""
        ...


class MemoryHarness:
    """The in-memory broker, with topic auto-creation off as on the test Kafka broker."""

    def __init__(self) -> None:
        self.broker = MemoryBroker(auto_create_topics=False)
        self.publisher = self.broker.publisher()

    async def create_topic(self, name: str, partitions: int) -> None:
        self.broker.create_topic(name, partitions)

    def new_publisher(self) -> Publisher:
        return self.broker.publisher()

    def new_consumer(self, group_id: str) -> Consumer:
        return self.broker.consumer(group_id)

    async def read_back(self, topic: str) -> list[Record]:
        return list(self.broker.records(topic))

    async def wait_until(
        self,
        predicate: Callable[[], bool],
        timeout: float = WAIT,  # noqa: ASYNC109 - a deadline for a predicate, not for an await
    ) -> None:
        await poll_condition(predicate, timeout)


async def poll_condition(
    predicate: Callable[[], bool],
    timeout: float,  # noqa: ASYNC109 - a deadline for a predicate, not for an await
) -> None:
    """Check ``predicate`` every few milliseconds until it holds; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        await asyncio.sleep(0.002)  # the condition wait's own tick, not a wait for an event


class KafkaHarness:
    """The aiokafka transport against the real test broker; ground truth read by fetching."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.settings = client_settings(bootstrap)
        self.publisher = KafkaPublisher(self.settings)

    async def create_topic(self, name: str, partitions: int) -> None:
        await create_topic(self.bootstrap, name, partitions)

    def new_publisher(self) -> Publisher:
        return KafkaPublisher(self.settings)

    def new_consumer(self, group_id: str) -> Consumer:
        return KafkaConsumer(self.settings, group_id)

    async def read_back(self, topic: str) -> list[Record]:
        return list(await read_topic(self.bootstrap, topic))

    async def wait_until(
        self,
        predicate: Callable[[], bool],
        timeout: float = WAIT,  # noqa: ASYNC109 - a deadline for a predicate, not for an await
    ) -> None:
        await poll_condition(predicate, timeout)


#: The transports every contract test runs against.
TRANSPORTS = ("memory", "kafka")


@pytest.fixture(params=TRANSPORTS)
async def transport(request: pytest.FixtureRequest) -> AsyncIterator[TransportHarness]:
    """A harness for each transport, with its publisher started."""
    harness: MemoryHarness | KafkaHarness
    if request.param == "memory":
        harness = MemoryHarness()
    elif request.param == "kafka":
        harness = KafkaHarness(request.getfixturevalue("kafka_bootstrap"))
    else:
        raise AssertionError(f"no harness for transport {request.param!r}")
    await harness.publisher.start()
    yield harness
    await harness.publisher.stop()


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Names unique to this test run, so topics and groups never collide on a shared broker."""
    suffix = uuid.uuid4().hex[:10]
    return lambda prefix: f"{prefix}-{suffix}"


class Member:
    """A consumer polling in a background task, keeping its records and listener calls."""

    def __init__(
        self,
        consumer: Consumer,
        on_revoked: Callable[[frozenset[TopicPartition]], Awaitable[None]] | None = None,
    ) -> None:
        self.consumer = consumer
        self.records: list[Record] = []
        self.calls: list[tuple[str, frozenset[TopicPartition]]] = []
        self.assigned: frozenset[TopicPartition] = frozenset()
        self._on_revoked = on_revoked
        self._polling = False
        self._task: asyncio.Task[None] | None = None

    async def on_partitions_revoked(self, revoked: frozenset[TopicPartition]) -> None:
        if revoked:
            self.calls.append(("revoked", revoked))
        if self._on_revoked is not None:
            await self._on_revoked(revoked)
        self.assigned = frozenset()

    async def on_partitions_assigned(self, assigned: frozenset[TopicPartition]) -> None:
        self.calls.append(("assigned", assigned))
        self.assigned = assigned

    async def start(self, topics: Collection[str]) -> None:
        await self.consumer.start(topics, self)
        self._polling = True
        self._task = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        while self._polling:
            batch = await self.consumer.getmany(POLL_TIMEOUT, 100)
            for records in batch.values():
                self.records.extend(records)

    async def stop(self) -> None:
        """Stop polling (surfacing any error of the poll task), then stop the consumer."""
        self._polling = False
        if self._task is not None:
            task, self._task = self._task, None
            await task
        await self.consumer.stop()

    def offsets(self, tp: TopicPartition) -> list[int]:
        return [r.offset for r in self.records if (r.topic, r.partition) == tp]


@pytest.fixture
async def members(transport: TransportHarness) -> AsyncIterator[Callable[[str], Member]]:
    """A factory of group members of ``transport``; all are stopped at teardown."""
    created: list[Member] = []

    def make(group_id: str) -> Member:
        member = Member(transport.new_consumer(group_id))
        created.append(member)
        return member

    yield make
    for member in created:
        await member.stop()


def tps(topic: str, partitions: int) -> frozenset[TopicPartition]:
    return frozenset(TopicPartition(topic, p) for p in range(partitions))


def by_partition(records: list[Record]) -> dict[TopicPartition, list[Record]]:
    grouped: dict[TopicPartition, list[Record]] = defaultdict(list)
    for record in records:
        grouped[TopicPartition(record.topic, record.partition)].append(record)
    return grouped


async def publish_keyed(transport: TransportHarness, topic: str, count: int) -> list[Record]:
    """Publish ``count`` records with distinct keys; return the topic as read back."""
    for i in range(count):
        await transport.publisher.send(topic, f"v{i}".encode(), key=f"key-{i}".encode())
    return await transport.read_back(topic)


# --- publish and consume ----------------------------------------------------------------------


async def test_published_records_are_consumed_once_with_bytes_intact(
    transport: TransportHarness, members: Callable[[str], Member], unique: Callable[[str], str]
) -> None:
    """Every published record is consumed once, offsets increase, key/value/headers intact."""
    topic = unique("intact")
    await transport.create_topic(topic, 3)
    sent: dict[bytes, tuple[bytes | None, list[tuple[str, bytes]]]] = {}
    for i in range(30):
        value = b"" if i == 0 else f"value-{i}".encode()
        key = None if i % 5 == 0 else f"k{i % 7}".encode()
        headers = [("event_type", b"T"), ("n", str(i).encode()), ("empty", b""), ("n", b"dup")]
        await transport.publisher.send(topic, value, key=key, headers=headers)
        sent[value] = (key, headers)
    member = members(unique("group"))
    await member.start([topic])

    await transport.wait_until(lambda: len(member.records) >= 30)

    assert sorted(r.value or b"" for r in member.records) == sorted(sent)
    assert len({(r.partition, r.offset) for r in member.records}) == 30
    for record in member.records:
        key, headers = sent[record.value or b""]
        assert record.topic == topic
        assert record.key == key
        assert [tuple(h) for h in record.headers] == headers
    for tp, records in by_partition(member.records).items():
        offsets = [r.offset for r in records]
        assert offsets == sorted(set(offsets)), tp
    empty = next(r for r in member.records if r.value == b"")
    assert empty.value == b""
    assert empty.key is None


async def test_records_with_the_same_key_land_on_one_partition_in_order(
    transport: TransportHarness, unique: Callable[[str], str]
) -> None:
    """All records of one key go to the same partition, in the order they were sent."""
    topic = unique("keys")
    await transport.create_topic(topic, 4)
    keys = [b"alpha", b"beta", b"gamma", b"delta", b"epsilon"]
    for round_ in range(4):
        for key in keys:
            await transport.publisher.send(topic, key + b"-%d" % round_, key=key)

    records = await transport.read_back(topic)

    for key in keys:
        mine = [r for r in records if r.key == key]
        assert len({r.partition for r in mine}) == 1
        ordered = sorted(mine, key=lambda r: r.offset)
        assert [r.value for r in ordered] == [key + b"-%d" % n for n in range(4)]


async def test_getmany_returns_a_record_published_while_it_waits(
    transport: TransportHarness, unique: Callable[[str], str]
) -> None:
    """A getmany waiting on an idle partition returns as soon as a record arrives."""
    topic = unique("wake")
    await transport.create_topic(topic, 1)
    member = Member(transport.new_consumer(unique("group")))
    await member.consumer.start([topic], member)
    tp = TopicPartition(topic, 0)
    await poll_until_assigned(transport, member, frozenset({tp}))

    async def publish_later() -> None:
        await asyncio.sleep(0.2)  # pacing: the record must arrive while getmany waits
        await transport.publisher.send(topic, b"late")

    started = time.monotonic()
    publishing = asyncio.create_task(publish_later())
    batch = await member.consumer.getmany(WAIT, 10)
    elapsed = time.monotonic() - started
    await publishing

    assert [r.value for r in batch[tp]] == [b"late"]
    assert 0.15 <= elapsed < WAIT / 2
    await member.consumer.stop()


async def test_getmany_on_an_idle_topic_returns_empty_within_the_timeout(
    transport: TransportHarness, unique: Callable[[str], str]
) -> None:
    """With nothing to read, getmany waits about its timeout and returns no records."""
    topic = unique("idle")
    await transport.create_topic(topic, 2)
    member = Member(transport.new_consumer(unique("group")))
    await member.consumer.start([topic], member)
    await poll_until_assigned(transport, member, tps(topic, 2))

    started = time.monotonic()
    batch = await member.consumer.getmany(0.3, 10)
    elapsed = time.monotonic() - started

    assert not any(batch.values())
    assert 0.15 <= elapsed < 2.0
    await member.consumer.stop()


async def poll_until_assigned(
    transport: TransportHarness, member: Member, expected: frozenset[TopicPartition]
) -> None:
    """Drive getmany by hand until the listener reported ``expected`` (no records expected)."""
    deadline = time.monotonic() + WAIT
    while member.assigned != expected:
        assert time.monotonic() < deadline, f"not assigned {sorted(expected)} in time"
        batch = await member.consumer.getmany(POLL_TIMEOUT, 10)
        assert not any(batch.values())


async def test_publishing_before_start_or_after_stop_raises(
    transport: TransportHarness, unique: Callable[[str], str]
) -> None:
    """A publisher refuses sends before start and after stop with PublisherNotStartedError."""
    topic = unique("lifecycle")
    await transport.create_topic(topic, 1)
    publisher = transport.new_publisher()

    with pytest.raises(PublisherNotStartedError):
        await publisher.send(topic, b"early")
    await publisher.start()
    await publisher.send(topic, b"ok")
    await publisher.stop()
    with pytest.raises(PublisherNotStartedError):
        await publisher.send(topic, b"late")

    assert [r.value for r in await transport.read_back(topic)] == [b"ok"]


# --- offsets and redelivery -------------------------------------------------------------------


async def test_a_new_consumer_of_the_group_resumes_at_the_committed_offsets(
    transport: TransportHarness, members: Callable[[str], Member], unique: Callable[[str], str]
) -> None:
    """After commits of explicit offsets, the next consumer of the group starts exactly there."""
    topic, group = unique("resume"), unique("group")
    await transport.create_topic(topic, 2)
    truth = by_partition(await publish_keyed(transport, topic, 20))
    assert all(len(records) >= 3 for records in truth.values()), "both partitions have records"
    first = members(group)
    await first.start([topic])
    await transport.wait_until(lambda: len(first.records) == 20)
    commit = {tp: 2 + tp.partition for tp in truth}
    await first.consumer.commit(commit)
    await first.stop()

    second = members(group)
    await second.start([topic])
    expected = sum(len(truth[tp]) - offset for tp, offset in commit.items())
    await transport.wait_until(lambda: len(second.records) >= expected)

    for tp, offset in commit.items():
        assert second.offsets(tp) == list(range(offset, len(truth[tp])))
        assert await second.consumer.committed(tp) == offset


async def test_fetched_records_not_committed_are_redelivered_after_stop(
    transport: TransportHarness, members: Callable[[str], Member], unique: Callable[[str], str]
) -> None:
    """Records a stopped consumer fetched but never committed go to the group's next consumer."""
    topic, group = unique("redeliver"), unique("group")
    await transport.create_topic(topic, 1)
    for i in range(6):
        await transport.publisher.send(topic, f"r{i}".encode())
    first = members(group)
    await first.start([topic])
    await transport.wait_until(lambda: len(first.records) == 6)
    await first.stop()

    second = members(group)
    await second.start([topic])
    await transport.wait_until(lambda: len(second.records) >= 6)

    assert [r.value for r in second.records] == [f"r{i}".encode() for i in range(6)]
    assert await second.consumer.committed(TopicPartition(topic, 0)) is None


async def test_commit_of_one_partition_leaves_the_others_alone(
    transport: TransportHarness, members: Callable[[str], Member], unique: Callable[[str], str]
) -> None:
    """Committing some partitions never changes the committed offsets of the others."""
    topic = unique("isolated")
    await transport.create_topic(topic, 3)
    truth = by_partition(await publish_keyed(transport, topic, 30))
    assert len(truth) == 3, "every partition has records"
    member = members(unique("group"))
    await member.start([topic])
    await transport.wait_until(lambda: len(member.records) == 30)
    p0, p1, p2 = sorted(tps(topic, 3))

    await member.consumer.commit({p0: 1, p1: 2})
    await member.consumer.commit({p0: len(truth[p0])})

    assert await member.consumer.committed(p0) == len(truth[p0])
    assert await member.consumer.committed(p1) == 2
    assert await member.consumer.committed(p2) is None


async def test_seek_makes_the_consumer_read_again_from_an_offset(
    transport: TransportHarness, members: Callable[[str], Member], unique: Callable[[str], str]
) -> None:
    """After seek(tp, n) the partition is read again from offset n."""
    topic = unique("seek")
    await transport.create_topic(topic, 1)
    for i in range(5):
        await transport.publisher.send(topic, f"s{i}".encode())
    member = members(unique("group"))
    await member.start([topic])
    tp = TopicPartition(topic, 0)
    await transport.wait_until(lambda: len(member.records) == 5)

    member.consumer.seek(tp, 1)
    await transport.wait_until(lambda: len(member.records) >= 9)

    assert member.offsets(tp) == [0, 1, 2, 3, 4, 1, 2, 3, 4]


# --- pause and resume -------------------------------------------------------------------------


async def test_paused_partition_yields_nothing_while_others_flow_until_resumed(
    transport: TransportHarness, members: Callable[[str], Member], unique: Callable[[str], str]
) -> None:
    """A paused partition returns no records while the others keep flowing; resume restarts it."""
    topic = unique("pause")
    await transport.create_topic(topic, 2)
    member = members(unique("group"))
    await member.start([topic])
    await transport.wait_until(lambda: member.assigned == tps(topic, 2))
    held, flowing = sorted(tps(topic, 2))
    member.consumer.pause([held])

    truth = by_partition(await publish_keyed(transport, topic, 20))
    assert truth[held], "both partitions have records"
    assert truth[flowing], "both partitions have records"
    await transport.wait_until(lambda: len(member.offsets(flowing)) == len(truth[flowing]))
    assert member.offsets(held) == []

    member.consumer.resume([held])
    await transport.wait_until(lambda: len(member.records) >= 20)

    assert member.offsets(held) == list(range(len(truth[held])))
    assert member.offsets(flowing) == list(range(len(truth[flowing])))


# --- groups and rebalances --------------------------------------------------------------------


async def test_two_consumers_split_the_partitions_and_the_survivor_takes_all(
    transport: TransportHarness, members: Callable[[str], Member], unique: Callable[[str], str]
) -> None:
    """A second member splits the partitions (revoke, then assign); when it stops, one has all."""
    topic, group = unique("split"), unique("group")
    await transport.create_topic(topic, 4)
    everything = tps(topic, 4)
    first, second = members(group), members(group)
    await first.start([topic])
    await transport.wait_until(lambda: first.assigned == everything)

    await second.start([topic])
    await transport.wait_until(
        lambda: (
            bool(first.assigned and second.assigned)
            and first.assigned | second.assigned == everything
        )
    )

    assert not first.assigned & second.assigned
    assert first.calls[-2:] == [("revoked", everything), ("assigned", first.assigned)]
    assert second.calls[-1] == ("assigned", second.assigned)

    await second.stop()
    await transport.wait_until(lambda: first.assigned == everything)
    assert first.calls[-1] == ("assigned", everything)


async def test_offsets_committed_in_the_revoke_listener_are_where_the_next_owner_starts(
    transport: TransportHarness, members: Callable[[str], Member], unique: Callable[[str], str]
) -> None:
    """A commit made inside on_partitions_revoked is honoured: nothing before it is redelivered."""
    topic, group = unique("handover"), unique("group")
    await transport.create_topic(topic, 2)
    truth = by_partition(await publish_keyed(transport, topic, 12))

    async def commit_everything(revoked: frozenset[TopicPartition]) -> None:
        if revoked:
            await first.consumer.commit({tp: len(truth[tp]) for tp in revoked})

    first = Member(transport.new_consumer(group), on_revoked=commit_everything)
    await first.start([topic])
    try:
        await transport.wait_until(lambda: len(first.records) == 12)
        second = members(group)
        await second.start([topic])
        await transport.wait_until(lambda: bool(first.assigned and second.assigned))
        for i in range(12, 24):
            await transport.publisher.send(topic, f"v{i}".encode(), key=f"key-{i}".encode())
        await transport.wait_until(lambda: len(first.records) + len(second.records) >= 24)

        later = [r.value or b"" for r in first.records[12:] + second.records]
        assert sorted(later) == sorted(f"v{i}".encode() for i in range(12, 24))
    finally:
        await first.stop()


async def test_a_commit_for_a_partition_lost_in_a_rebalance_raises(
    transport: TransportHarness, members: Callable[[str], Member], unique: Callable[[str], str]
) -> None:
    """After a rebalance moved a partition away, its former owner's commit of it is refused."""
    topic, group = unique("stale"), unique("group")
    await transport.create_topic(topic, 2)
    await publish_keyed(transport, topic, 6)
    first, second = members(group), members(group)
    await first.start([topic])
    await transport.wait_until(lambda: first.assigned == tps(topic, 2))
    await second.start([topic])
    await transport.wait_until(lambda: bool(first.assigned and second.assigned))
    (lost,) = second.assigned

    with pytest.raises(CommitFailedError):
        await first.consumer.commit({lost: 3})

    assert await second.consumer.committed(lost) is None
