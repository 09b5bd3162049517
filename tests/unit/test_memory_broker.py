"""The in-memory broker's own behaviour: partitioner, group protocol details and fault seams.

Port-level behaviour shared with Kafka lives in ``tests/contract/test_transport.py``; this file
checks what only the memory transport has or what needs its internals to observe.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import TYPE_CHECKING

import pytest

from eventkit.errors import CommitFailedError, PublishError
from eventkit.ports import TopicPartition
from eventkit.transports.memory import (
    ConsumerCrashedError,
    MemoryBroker,
    MemoryConsumer,
    StoredRecord,
    UnknownTopicError,
    default_partition,
    murmur2,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from eventkit.ports import Record

WAIT = 5.0
P0, P1, P2 = (TopicPartition("t", p) for p in range(3))


class Listener:
    """Records listener calls; optionally raises from them."""

    def __init__(self, *, fail: bool = False) -> None:
        self.calls: list[tuple[str, frozenset[TopicPartition]]] = []
        self.fail = fail

    async def on_partitions_revoked(self, revoked: frozenset[TopicPartition]) -> None:
        self.calls.append(("revoked", revoked))
        if self.fail:
            raise RuntimeError("revoke listener bug")

    async def on_partitions_assigned(self, assigned: frozenset[TopicPartition]) -> None:
        self.calls.append(("assigned", assigned))
        if self.fail:
            raise RuntimeError("assign listener bug")


async def started(
    broker: MemoryBroker, group: str = "g", topic: str = "t", listener: Listener | None = None
) -> tuple[MemoryConsumer, Listener]:
    consumer = broker.consumer(group)
    listener = listener or Listener()
    await consumer.start([topic], listener)
    return consumer, listener


async def poll(
    consumer: MemoryConsumer, until: Callable[[], bool], *, max_records: int = 100
) -> list[Record]:
    """Call getmany until ``until()`` holds; return the records fetched on the way."""
    records: list[Record] = []
    deadline = time.monotonic() + WAIT
    while not until():
        assert time.monotonic() < deadline, "condition not met in time"
        for batch in (await consumer.getmany(0.05, max_records)).values():
            records.extend(batch)
    return records


async def poll_both(a: MemoryConsumer, b: MemoryConsumer, until: Callable[[], bool]) -> None:
    """Poll two members concurrently (a rebalance needs both) until ``until()`` holds."""
    await asyncio.gather(poll(a, until), poll(b, until))


# --- partitioner ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("21", -973932308),
        ("foobar", -790332482),
        ("a-little-bit-long-string", -985981536),
        ("a-little-bit-longer-string", -1486304829),
        ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        ("abc", 479470107),
    ],
)
def test_murmur2_matches_kafka_test_vectors(data: str, expected: int) -> None:
    """murmur2 returns the values of Kafka's own Utils.murmur2 test vectors."""
    assert murmur2(data.encode()) == expected


def test_default_partition_is_positive_murmur2_modulo_count() -> None:
    """A key's partition is murmur2 made positive, modulo the partition count, as in Kafka."""
    # murmur2(b"foobar") & 0x7fffffff == 1357151166
    assert default_partition(b"foobar", 3) == 1357151166 % 3 == 0
    assert default_partition(b"foobar", 7) == 1357151166 % 7
    assert default_partition(b"", 5) == (murmur2(b"") & 0x7FFFFFFF) % 5


def test_keyed_records_use_the_default_partitioner_and_keyless_go_round_robin() -> None:
    """A keyed append lands on default_partition(key); keyless appends rotate partitions."""
    broker = MemoryBroker()
    keyed = broker.append("t", b"v", key=b"foobar")
    keyless = [broker.append("t", b"x").partition for _ in range(6)]

    assert keyed.partition == default_partition(b"foobar", 3)
    assert keyless == [0, 1, 2, 0, 1, 2]


def test_appended_records_get_contiguous_offsets_and_the_broker_timestamp() -> None:
    """Offsets per partition start at 0 without gaps; timestamps come from now_ms."""
    broker = MemoryBroker(now_ms=lambda: 1_700_000_000_000)
    records = [broker.append("t", b"v", partition=1, headers=[("h", b"1")]) for _ in range(3)]

    assert [r.offset for r in records] == [0, 1, 2]
    assert {r.timestamp for r in records} == {1_700_000_000_000}
    assert broker.append("t", None, partition=1, timestamp_ms=5).timestamp == 5
    assert broker.end_offset(P1) == 4
    assert broker.records("t", 1)[0].headers == (("h", b"1"),)


def test_stored_record_is_frozen_and_slotted() -> None:
    """StoredRecord is an immutable value without a __dict__."""
    record = StoredRecord("t", 0, 0, 1, None, b"v", ())
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.offset = 3  # type: ignore[misc]
    assert not hasattr(record, "__dict__")


# --- topics -----------------------------------------------------------------------------------


def test_create_topic_is_idempotent_but_refuses_another_partition_count() -> None:
    """Creating an existing topic with the same count is a no-op; another count is an error."""
    broker = MemoryBroker()
    broker.create_topic("orders", 2)
    broker.create_topic("orders", 2)

    with pytest.raises(ValueError, match="exists with 2 partitions"):
        broker.create_topic("orders", 4)
    assert broker.partitions_for("orders") == (
        TopicPartition("orders", 0),
        TopicPartition("orders", 1),
    )
    assert broker.topics() == ("orders",)


async def test_unknown_topic_without_auto_create_is_a_publish_error_naming_it() -> None:
    """With auto-create off, sending to an unknown topic raises PublishError with its name."""
    broker = MemoryBroker(auto_create_topics=False)
    publisher = broker.publisher()
    await publisher.start()

    with pytest.raises(PublishError, match="'nowhere'"):
        await publisher.send("nowhere", b"v")
    with pytest.raises(UnknownTopicError):
        broker.append("nowhere", b"v")
    assert broker.topics() == ()


async def test_auto_create_makes_topics_with_the_default_partition_count() -> None:
    """With auto-create on, the first send creates the topic with default_partitions."""
    broker = MemoryBroker(default_partitions=5)
    publisher = broker.publisher()
    await publisher.start()
    await publisher.send("fresh", b"v")

    assert len(broker.partitions_for("fresh")) == 5


async def test_a_topic_created_after_subscribing_is_assigned_by_a_rebalance() -> None:
    """Subscribing to a missing topic assigns nothing; creating it later rebalances the group."""
    broker = MemoryBroker(auto_create_topics=False)
    consumer, listener = await started(broker, topic="later")
    await poll(consumer, lambda: ("assigned", frozenset()) in listener.calls)

    broker.create_topic("later", 2)
    await poll(consumer, lambda: len(consumer.assignment()) == 2)

    assert listener.calls[-1] == ("assigned", frozenset(broker.partitions_for("later")))


# --- fetching ---------------------------------------------------------------------------------


async def test_getmany_spreads_max_records_across_partitions() -> None:
    """A small max_records takes from every ready partition instead of draining one first."""
    broker = MemoryBroker()
    for p in range(3):
        for _ in range(10):
            broker.append("t", b"v", partition=p)
    consumer, _ = await started(broker)
    await poll(consumer, lambda: len(consumer.assignment()) == 3, max_records=1)
    # the poll above may have fetched; seek back so the next call sees full partitions
    for tp in (P0, P1, P2):
        consumer.seek(tp, 0)

    batch = await consumer.getmany(0.1, 6)

    assert {tp: len(records) for tp, records in batch.items()} == {P0: 2, P1: 2, P2: 2}
    assert all([r.offset for r in records] == [0, 1] for records in batch.values())
    consumer.seek(P0, 9)
    batch = await consumer.getmany(0.1, 7)
    # P0 has one record left; the other two share what it could not take
    assert {tp: len(records) for tp, records in batch.items()} == {P0: 1, P1: 3, P2: 3}


async def test_position_after_assignment_is_the_committed_offset() -> None:
    """A partition starts at the group's committed offset, or at 0 when none was committed."""
    broker = MemoryBroker()
    for i in range(4):
        broker.append("t", str(i).encode(), partition=0)
    first, _ = await started(broker)
    await poll(first, lambda: len(first.assignment()) == 3)
    await first.commit({P0: 3})
    await first.stop()

    second, _ = await started(broker)
    records = await poll(second, lambda: len(second.assignment()) == 3)

    assert [(r.partition, r.offset) for r in records] == [(0, 3)]
    assert second.position(P1) == 0
    assert broker.committed("g", P0) == 3


async def test_wakeup_makes_a_waiting_getmany_return_early() -> None:
    """wakeup() ends a long getmany wait with no records."""
    broker = MemoryBroker()
    consumer, _ = await started(broker)
    await poll(consumer, lambda: len(consumer.assignment()) == 3)
    asyncio.get_running_loop().call_later(0.1, consumer.wakeup)

    started_at = time.monotonic()
    batch = await consumer.getmany(WAIT * 4, 10)

    assert batch == {}
    assert time.monotonic() - started_at < WAIT


async def test_getmany_before_start_raises_and_after_stop_returns_empty() -> None:
    """getmany refuses to run before start and returns {} at once after stop."""
    broker = MemoryBroker()
    consumer = broker.consumer("g")
    with pytest.raises(RuntimeError, match="before start"):
        await consumer.getmany(0.1, 10)
    await consumer.start(["t"], Listener())
    await consumer.stop()

    started_at = time.monotonic()
    assert await consumer.getmany(WAIT, 10) == {}
    assert time.monotonic() - started_at < 1.0


async def test_pause_of_a_partition_not_assigned_is_refused() -> None:
    """pause, resume and seek name the partition when it is not assigned to the consumer."""
    broker = MemoryBroker()
    consumer, _ = await started(broker)
    elsewhere = TopicPartition("other", 0)

    with pytest.raises(ValueError, match="not assigned"):
        consumer.pause([elsewhere])
    with pytest.raises(ValueError, match="not assigned"):
        consumer.seek(elsewhere, 0)


# --- rebalances -------------------------------------------------------------------------------


async def test_pause_state_does_not_survive_a_rebalance() -> None:
    """A partition assigned again after a rebalance comes back unpaused and yields records."""
    broker = MemoryBroker(default_partitions=2)
    first, _ = await started(broker)
    await poll(first, lambda: len(first.assignment()) == 2)
    first.pause([P0])
    broker.append("t", b"held", partition=0)
    assert await first.getmany(0.05, 10) == {}

    second, _ = await started(broker)
    records, _ = await asyncio.gather(
        poll(first, lambda: first.assignment() == frozenset({P0})),
        poll(second, lambda: second.assignment() == frozenset({P1})),
    )

    assert first.paused() == frozenset()
    assert [r.value for r in records] == [b"held"]


async def test_listener_errors_are_counted_and_not_fatal() -> None:
    """A raising listener is counted in listener_errors and the consumer keeps consuming."""
    broker = MemoryBroker()
    broker.append("t", b"v", partition=1)
    consumer, listener = await started(broker, listener=Listener(fail=True))

    records = await poll(consumer, lambda: len(consumer.assignment()) == 3)

    assert consumer.listener_errors == 2
    assert [call for call, _ in listener.calls] == ["revoked", "assigned"]
    assert [r.value for r in records] == [b"v"]


async def test_a_rebalance_waits_for_every_member_to_revoke() -> None:
    """Nobody gets a partition before its previous owner ran its revoke listener (eager)."""
    broker = MemoryBroker(default_partitions=2)
    broker.append("t", b"a", partition=0)
    broker.append("t", b"b", partition=1)
    first, first_calls = await started(broker)
    await poll(first, lambda: len(first.assignment()) == 2)
    second, second_calls = await started(broker)

    assert await second.getmany(0.05, 10) == {}
    assert second.assignment() == frozenset()
    assert second_calls.calls == [("revoked", frozenset())]
    # the first member has not rejoined yet: it still owns both and may commit them
    await first.commit({P0: 1, P1: 1})
    assert await first.getmany(0.05, 10) == {}  # revoke, rejoin, take P0: the group is stable
    # P1 is the second member's now, but it has not been told yet: it may not commit P1
    with pytest.raises(CommitFailedError, match="not assigned"):
        await second.commit({P1: 1})

    await poll_both(first, second, lambda: len(second.assignment()) == 1)
    assert first_calls.calls[-2:] == [
        ("revoked", frozenset({P0, P1})),
        ("assigned", frozenset({P0})),
    ]
    assert second.position(P1) == 1


async def test_a_member_that_misses_the_rebalance_timeout_is_evicted_and_fenced() -> None:
    """A member that does not poll within the rebalance timeout loses its partitions."""
    broker = MemoryBroker(default_partitions=2, rebalance_timeout=0.1)
    first, first_calls = await started(broker)
    await poll(first, lambda: len(first.assignment()) == 2)
    second, _ = await started(broker)

    await poll(second, lambda: len(second.assignment()) == 2)
    with pytest.raises(CommitFailedError, match="fenced"):
        await first.commit({P0: 1})

    await poll_both(first, second, lambda: len(first.assignment()) == 1)
    assert ("revoked", frozenset({P0, P1})) in first_calls.calls
    assert first.listener_errors == 0


async def test_crash_leaves_the_group_and_its_getmany_raises() -> None:
    """crash() hands the partitions over, uncommitted records included, and kills the consumer."""
    broker = MemoryBroker(default_partitions=1)
    for i in range(3):
        broker.append("t", f"r{i}".encode())
    doomed, _ = await started(broker)
    fetched = await poll(doomed, lambda: len(doomed.assignment()) == 1)
    await doomed.commit({TopicPartition("t", 0): 1})
    assert len(fetched) == 3

    doomed.crash()
    with pytest.raises(ConsumerCrashedError):
        await doomed.getmany(0.05, 10)
    with pytest.raises(CommitFailedError):
        await doomed.commit({TopicPartition("t", 0): 3})

    heir, _ = await started(broker)
    records = await poll(heir, lambda: len(heir.assignment()) == 1)
    assert [r.value for r in records] == [b"r1", b"r2"]


async def test_crash_while_getmany_waits_makes_it_raise() -> None:
    """A getmany waiting when the consumer crashes raises instead of returning."""
    broker = MemoryBroker()
    consumer, _ = await started(broker)
    await poll(consumer, lambda: len(consumer.assignment()) == 3)
    asyncio.get_running_loop().call_later(0.1, consumer.crash)

    with pytest.raises(ConsumerCrashedError):
        await asyncio.wait_for(consumer.getmany(WAIT * 4, 10), WAIT)


# --- fault seams ------------------------------------------------------------------------------


async def test_failing_publishes_raise_publish_error_and_write_nothing() -> None:
    """An injected publish fault raises PublishError from the error and stores no record."""
    broker = MemoryBroker()
    publisher = broker.publisher()
    await publisher.start()
    cause = ConnectionError("broker unreachable")
    broker.fail_publishes("dlq", cause)

    with pytest.raises(PublishError) as raised:
        await publisher.send("dlq", b"v")
    await publisher.send("events", b"other topics still work")

    assert raised.value.__cause__ is cause
    assert broker.records("events")
    assert "dlq" not in broker.topics()
    broker.fail_publishes("dlq", None)
    await publisher.send("dlq", b"v")
    assert [r.value for r in broker.records("dlq")] == [b"v"]


async def test_a_fault_for_all_topics_can_be_limited_to_some_sends() -> None:
    """fail_publishes(None, error, times=n) fails the next n sends to any topic, then clears."""
    broker = MemoryBroker()
    publisher = broker.publisher()
    await publisher.start()
    broker.fail_publishes(None, TimeoutError("ack timed out"), times=2)

    outcomes = []
    for topic in ("a", "b", "a"):
        try:
            await publisher.send(topic, b"v")
            outcomes.append("sent")
        except PublishError:
            outcomes.append("failed")

    assert outcomes == ["failed", "failed", "sent"]
    assert [r.value for r in broker.records("a")] == [b"v"]


async def test_failing_commits_raise_and_keep_the_committed_offset() -> None:
    """While commits fail for the group, commit raises CommitFailedError and stores nothing."""
    broker = MemoryBroker()
    consumer, _ = await started(broker)
    await poll(consumer, lambda: len(consumer.assignment()) == 3)
    await consumer.commit({P0: 1})
    broker.fail_commits("g", True)

    with pytest.raises(CommitFailedError, match="injected"):
        await consumer.commit({P0: 5})
    assert broker.committed("g", P0) == 1

    broker.fail_commits("g", False)
    await consumer.commit({P0: 5})
    assert broker.committed("g", P0) == 5


async def test_committing_backwards_is_allowed_as_in_kafka() -> None:
    """A commit below the committed offset is accepted: never going back is the worker's job."""
    broker = MemoryBroker()
    consumer, _ = await started(broker)
    await poll(consumer, lambda: len(consumer.assignment()) == 3)
    await consumer.commit({P2: 7})
    await consumer.commit({P2: 4})

    assert await consumer.committed(P2) == 4


async def test_a_revoke_listener_cancelled_midway_keeps_the_partitions_until_rerun() -> None:
    """getmany cancelled inside the revoke listener keeps the assignment; the next one redoes it."""
    broker = MemoryBroker(default_partitions=2)
    entered, release = asyncio.Event(), asyncio.Event()
    revokes: list[frozenset[TopicPartition]] = []

    class SlowRevoke(Listener):
        async def on_partitions_revoked(self, revoked: frozenset[TopicPartition]) -> None:
            revokes.append(revoked)
            if revoked:
                entered.set()
                await release.wait()

    first, _ = await started(broker, listener=SlowRevoke())
    await poll(first, lambda: len(first.assignment()) == 2)
    second, _ = await started(broker)
    polling = asyncio.create_task(first.getmany(WAIT, 10))
    await asyncio.wait_for(entered.wait(), WAIT)

    polling.cancel()
    with pytest.raises(asyncio.CancelledError):
        await polling
    assert first.assignment() == frozenset({P0, P1})
    await first.commit({P0: 1, P1: 1})

    release.set()
    await poll_both(first, second, lambda: len(second.assignment()) == 1)
    assert revokes == [frozenset(), frozenset({P0, P1}), frozenset({P0, P1})]
    assert second.position(P1) == 1
