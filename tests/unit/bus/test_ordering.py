"""Key-ordered concurrency and ``max_in_flight`` in memory, with the fake clock."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import pytest

from eventkit import (
    ConfigurationError,
    EventApp,
    EventContext,
    Outcome,
    RetryPolicy,
    WorkerConfig,
)
from eventkit.keys import event_key, namespace_for
from eventkit.ports import ClaimRequest, ClaimStatus, TopicPartition

if TYPE_CHECKING:
    from eventkit.testing import TestBus


class Tally:
    """Records running at once, and the most seen so far."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0

    def enter(self) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)

    def leave(self) -> None:
        self.running -= 1


def key_of(app: EventApp, event_type: str, event_id: str) -> str:
    return event_key(namespace_for(app.service, app.group_id), event_type, event_id)


def committed_to_end(bus: TestBus, topic: str) -> bool:
    return all(
        bus.committed(topic, tp.partition) == bus.end_offset(topic, tp.partition)
        for tp in bus.broker.partitions_for(topic)
    )


async def commit_now(bus: TestBus) -> None:
    """The commit the worker would make next, made now."""
    worker = bus.app.worker
    await worker.committer.commit(list(worker.owned()))


async def test_each_key_keeps_its_order_while_keys_overlap_and_commits_reach_the_end() -> None:
    """200 events over 8 keys and 3 partitions, handlers of random length: every key's events
    run in publish order, different keys overlap inside a partition, and once quiet every
    partition is committed to its end."""
    app = EventApp("orders", idempotency=False)
    rng = random.Random(7)
    seen: dict[str, list[int]] = defaultdict(list)
    overlap: dict[int, Tally] = defaultdict(Tally)

    @app.handler("ORDER_PLACED", topic="orders", ordering="key")
    async def placed(event: dict[str, Any], ctx: EventContext) -> None:
        tally = overlap[ctx.partition]
        tally.enter()
        try:
            seen[event["key"]].append(event["n"])
            for _ in range(rng.randrange(6)):
                await asyncio.sleep(0)
        finally:
            tally.leave()

    async with app.testing(partitions=3) as bus:
        published: dict[str, list[int]] = defaultdict(list)
        for number in range(200):
            key = f"k{number % 8}"
            published[key].append(number)
            await bus.publish("orders", "ORDER_PLACED", {"key": key, "n": number}, key=key)
        await bus.run_until_idle()
        assert committed_to_end(bus, "orders")
    assert seen == published
    assert max(tally.peak for tally in overlap.values()) > 1, "keys of a partition overlapped"


@pytest.mark.parametrize("ordering", ["key", "partition"])
async def test_two_keys_of_one_partition_overlap_only_with_key_ordering(ordering: str) -> None:
    """Two events of one partition, each waiting for the other to start: with ordering="key"
    both run at once and finish; the sequential default never runs them at once, so the
    first one's wait times out."""
    app = EventApp("pairs", idempotency=False, retry=RetryPolicy(max_attempts=1))
    started = {"a": asyncio.Event(), "b": asyncio.Event()}
    tally = Tally()

    @app.handler("PAIRED", topic="pairs", ordering=ordering)
    async def paired(event: dict[str, str]) -> None:
        tally.enter()
        try:
            mine = event["side"]
            started[mine].set()
            # real seconds: the fake clock must not be what ends the wait
            await asyncio.wait_for(started["b" if mine == "a" else "a"].wait(), 0.5)
        finally:
            tally.leave()

    async with app.testing(partitions=1) as bus:
        await bus.publish("pairs", "PAIRED", {"side": "a"}, key="a")
        await bus.publish("pairs", "PAIRED", {"side": "b"}, key="b")
        await bus.run_until_idle()
        if ordering == "key":
            assert tally.peak == 2
            assert bus.outcomes == {Outcome.HANDLED: 2}
        else:
            assert tally.peak == 1
            assert bus.outcomes == {Outcome.DEAD_LETTERED: 1, Outcome.HANDLED: 1}


async def test_commits_never_pass_an_unfinished_record_when_later_keys_finish_first() -> None:
    """Key b's first record finishes, then key a's record (offset 1) runs while key b's four
    records behind it finish: the commit stays at 1, not at the last finished offset + 1;
    after it finishes, the commit reaches 6. (It fails with ``commit_last_finished`` planted.)"""
    app = EventApp("prefix", idempotency=False)
    release = asyncio.Event()
    finished: list[str] = []

    @app.handler("STEP", topic="steps", ordering="key")
    async def step(event: dict[str, str], ctx: EventContext) -> None:
        if ctx.offset == 1:
            await release.wait()
        finished.append(event["id"])

    async with app.testing(partitions=1) as bus:
        await bus.publish("steps", "STEP", {"id": "b0"}, key="b")
        await bus.run_until(lambda: finished == ["b0"])
        await bus.publish("steps", "STEP", {"id": "a0"}, key="a")
        for number in range(1, 5):
            await bus.publish("steps", "STEP", {"id": f"b{number}"}, key="b")
        try:
            await bus.run_until(lambda: len(finished) == 5)
            assert finished == ["b0", "b1", "b2", "b3", "b4"], "key b ran on while key a runs"
            assert bus.app.worker.unfinished() == 1
            await commit_now(bus)
            assert bus.committed("steps", 0) == 1
        finally:
            release.set()  # a failed assert must not leave stop() draining a stuck record
        await bus.run_until_idle()
        assert bus.committed("steps", 0) == 6
    assert finished[-1] == "a0"


async def test_a_busy_key_defers_only_its_key_pauses_and_holds_commits_until_it_is_final() -> None:
    """Another worker holds event x's lease (key a) for 5 s: x is deferred, key a's next event
    waits behind it, key b's events run, the partition pauses and nothing is committed past
    x; after the lease expires x runs, then key a's next, and the commit reaches the end."""
    app = EventApp("busy", lease_seconds=30.0)
    ran: list[str] = []

    @app.handler("ORDER_PLACED", topic="orders", ordering="key")
    async def placed(event: dict[str, str]) -> None:
        ran.append(event["id"])

    async with app.testing(partitions=1) as bus:
        x = await bus.publish("orders", "ORDER_PLACED", {"id": "x"}, key="a")
        [foreign] = await bus.store.claim(
            [ClaimRequest(key_of(app, "ORDER_PLACED", x.event_id))], 5.0
        )
        assert foreign.status is ClaimStatus.CLAIMED  # precondition: another live lease on x
        await bus.publish("orders", "ORDER_PLACED", {"id": "a-next"}, key="a")
        for number in range(3):
            await bus.publish("orders", "ORDER_PLACED", {"id": f"b{number}"}, key="b")
        await bus.run_until(lambda: len(ran) == 3)
        assert ran == ["b0", "b1", "b2"]
        assert bus.outcomes[Outcome.DEFERRED] >= 1
        assert bus.consumer.paused() == {TopicPartition("orders", 0)}
        await commit_now(bus)
        assert bus.committed("orders", 0) in (None, 0), "nothing committed past x"
        await bus.run_until_idle()
        assert ran == ["b0", "b1", "b2", "x", "a-next"]
        assert bus.committed("orders", 0) == 5
        assert bus.consumer.paused() == frozenset()
        assert bus.outcomes[Outcome.HANDLED] == 5


@pytest.mark.parametrize("ordering", ["key", "partition"])
async def test_max_in_flight_is_the_peak_of_records_running_at_once(ordering: str) -> None:
    """max_in_flight=3 over 4 partitions (sequential lanes, or keyed lanes of 16 runners):
    exactly three records run at once, never a fourth, and every record still runs."""
    app = EventApp("capped", idempotency=False, worker=WorkerConfig(max_in_flight=3))
    gate = asyncio.Event()
    tally = Tally()

    @app.handler("ORDER_PLACED", topic="orders", ordering=ordering)
    async def placed(event: dict[str, int]) -> None:
        tally.enter()
        try:
            await gate.wait()
        finally:
            tally.leave()

    async with app.testing(partitions=4) as bus:
        for number in range(40):
            await bus.publish("orders", "ORDER_PLACED", {"n": number}, key=f"k{number}")
        assert {record.partition for record in bus.published("orders")} == {0, 1, 2, 3}
        await bus.run_until(lambda: tally.running == 3)
        assert bus.app.worker.in_flight() == 3
        await bus.run_until(lambda: bus.app.worker.unfinished() == 40)  # settled again
        assert tally.running == 3, "no fourth record started"
        gate.set()
        await bus.run_until_idle()
        assert bus.outcomes == {Outcome.HANDLED: 40}
        assert bus.app.worker.in_flight() == 0
    assert tally.peak == 3


async def test_a_topic_mixing_orderings_fails_at_start_up_naming_the_topic_and_handlers() -> None:
    """ordering is per handler but lanes are per partition: a topic whose handlers disagree
    is a ConfigurationError when the app starts, naming the topic and each handler."""
    app = EventApp("mixed", idempotency=False)

    @app.handler("ORDER_PLACED", topic="orders", ordering="key")
    async def placed(event: dict[str, Any]) -> None: ...

    @app.handler("ORDER_CANCELLED", topic="orders")
    async def cancelled(event: dict[str, Any]) -> None: ...

    @app.handler("STOCK_RESERVED", topic="stock", ordering="partition")
    async def reserved(event: dict[str, Any]) -> None: ...

    with pytest.raises(ConfigurationError, match="topic 'orders' mixes handler orderings") as info:
        async with app.testing():
            pass
    message = str(info.value)
    assert f"{placed.__qualname__} (key)" in message
    assert f"{cancelled.__qualname__} (partition)" in message
    assert "stock" not in message


def test_only_topics_whose_handlers_all_say_key_are_key_ordered() -> None:
    """All handlers of a topic ordering="key": key-ordered; none (or "partition"): not."""
    app = EventApp("split", idempotency=False)

    @app.handler("A", topic="keyed", ordering="key")
    async def first(event: dict[str, Any]) -> None: ...

    @app.handler("B", topic="keyed", ordering="key")
    async def second(event: dict[str, Any]) -> None: ...

    @app.handler("C", topic="plain")
    async def third(event: dict[str, Any]) -> None: ...

    @app.handler("D", topic="explicit", ordering="partition")
    async def fourth(event: dict[str, Any]) -> None: ...

    app.validate()
    assert app.key_ordered_topics() == {"keyed"}
