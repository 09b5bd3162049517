"""The worker with key-ordered lanes on the in-memory broker: drains on stop and revoke.

Real asyncio and the system clock with short ``WorkerConfig`` timings, as in
``test_worker.py``; every wait is on a condition with a deadline.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from eventkit import EventApp, EventContext, EventPublisher, TopicPartition, WorkerConfig
from eventkit.clock import SystemClock
from eventkit.idempotency import InMemoryIdempotencyStore
from eventkit.keys import event_key, namespace_for
from eventkit.ports import ClaimRequest, ClaimStatus
from eventkit.transports.memory import MemoryBroker
from eventkit.transports.partitioner import default_partition
from tests.unit.worker.support import EVENT, GROUP, SERVICE, TOPIC, eventually, fast

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable


def keys_on(partition: int, partitions: int, count: int) -> list[str]:
    """``count`` record keys that Kafka's default partitioner puts on ``partition``."""
    found = (f"k{number}" for number in range(10_000))
    on = (key for key in found if default_partition(key.encode(), partitions) == partition)
    return [next(on) for _ in range(count)]


class Group:
    """One broker, an upstream producer, and the workers of one group (aborted at the end).

    Every handler run over every worker is noted in ``runs`` by worker name and event number.
    """

    def __init__(self) -> None:
        self.broker = MemoryBroker()
        self._transport = self.broker.publisher()
        self._producer = EventPublisher(self._transport, source_service="upstream")
        self._apps: list[EventApp] = []
        self.runs: dict[str, list[int]] = {}
        self.event_ids: dict[int, str] = {}

    def ran(self, worker: str) -> list[int]:
        return self.runs.get(worker, [])

    def counts(self) -> Counter[int]:
        return Counter(number for runs in self.runs.values() for number in runs)

    def app(
        self,
        name: str,
        hook: Callable[[int, EventContext], Awaitable[None]] | None = None,
        *,
        idempotency: bool = False,
        config: WorkerConfig | None = None,
    ) -> EventApp:
        """A worker of the group whose key-ordered handler notes the run, then calls ``hook``."""
        app = EventApp(SERVICE, group_id=GROUP, idempotency=idempotency, worker=config or fast())

        @app.handler(EVENT, topic=TOPIC, ordering="key")
        async def handle(event: dict[str, int], ctx: EventContext) -> None:
            self.runs.setdefault(name, []).append(event["n"])
            if hook is not None:
                await hook(event["n"], ctx)

        return app

    async def publish(self, keys: list[str]) -> list[int]:
        """One event per key, numbered on from the last one; returns their numbers."""
        numbers = []
        for key in keys:
            number = len(self.event_ids)
            envelope = await self._producer.publish(TOPIC, EVENT, {"n": number}, key=key)
            self.event_ids[number] = envelope.event_id
            numbers.append(number)
        return numbers

    def claim_key(self, app: EventApp, number: int) -> str:
        namespace = namespace_for(app.service, app.group_id)
        return event_key(namespace, EVENT, self.event_ids[number])

    async def start(self, app: EventApp, store: InMemoryIdempotencyStore | None = None) -> None:
        self._apps.append(app)
        await app.start(
            consumer=self.broker.consumer(GROUP),
            publisher=self.broker.publisher(),
            store=store,
            clock=SystemClock(),
        )

    def committed(self, tp: TopicPartition) -> int | None:
        return self.broker.committed(GROUP, tp)

    async def open(self) -> None:
        await self._transport.start()

    async def close(self) -> None:
        for app in self._apps:
            if app.running:
                await app.abort()
        await self._transport.stop()


@pytest.fixture
async def group() -> AsyncIterator[Group]:
    group = Group()
    await group.open()
    try:
        yield group
    finally:
        await group.close()


def gated(gate: asyncio.Event, numbers: set[int]) -> Callable[[int, EventContext], Awaitable[None]]:
    """A hook that holds the given events until ``gate`` is set."""

    async def hook(number: int, ctx: EventContext) -> None:
        if number in numbers:
            await gate.wait()

    return hook


async def test_stop_drains_every_key_in_flight_and_leaves_the_queued_ones_uncommitted(
    group: Group,
) -> None:
    """Three keys in flight and one record queued behind each: stop waits for the three, starts
    none of the queued, says True and commits exactly the three; the next worker runs the rest
    and nothing runs twice."""
    group.broker.create_topic(TOPIC, 1)
    tp = TopicPartition(TOPIC, 0)
    gate = asyncio.Event()
    app_a = group.app("a", gated(gate, {0, 1, 2}))
    await group.start(app_a)
    in_flight = await group.publish(["a", "b", "c"])
    queued = await group.publish(["a", "b", "c"])
    await eventually(lambda: sorted(group.ran("a")) == in_flight, "three keys are in flight")
    assert app_a.worker.unfinished() == 6, "the queued ones were fetched too"

    stopping = asyncio.create_task(app_a.stop())
    await eventually(lambda: not app_a.worker.running, "stop began")
    gate.set()
    assert await asyncio.wait_for(stopping, 5.0) is True
    assert sorted(group.ran("a")) == in_flight
    assert group.committed(tp) == 3

    app_b = group.app("b")
    await group.start(app_b)
    await eventually(lambda: group.committed(tp) == 6, "the next worker committed the rest")
    assert group.ran("b") == queued
    assert set(group.counts().values()) == {1}


async def test_stop_at_its_deadline_hands_back_cut_off_and_queued_records_with_their_claims(
    group: Group,
) -> None:
    """Three keys stuck past drain_timeout, with records claimed ahead queued behind them:
    stop says False, commits nothing past the first stuck record, and releases every claim,
    so the next worker runs all six at once instead of waiting out 30 s leases."""
    group.broker.create_topic(TOPIC, 1)
    tp = TopicPartition(TOPIC, 0)
    store = InMemoryIdempotencyStore()
    never = asyncio.Event()
    config = fast(drain_timeout=0.2)
    app_a = group.app("a", gated(never, {0, 1, 2}), idempotency=True, config=config)
    await group.start(app_a, store)
    in_flight = await group.publish(["a", "b", "c"])
    queued = await group.publish(["a", "b", "c"])
    await eventually(lambda: sorted(group.ran("a")) == in_flight, "three keys are stuck")
    ahead = [ClaimRequest(group.claim_key(app_a, number)) for number in queued]
    answers = await store.claim(ahead, 30.0)
    assert {answer.status for answer in answers} == {ClaimStatus.BUSY}, "claimed ahead"

    assert await asyncio.wait_for(app_a.stop(), 5.0) is False
    assert group.committed(tp) in (None, 0), "nothing committed past the first stuck record"

    app_b = group.app("b", idempotency=True)
    await group.start(app_b, store)
    await eventually(lambda: group.committed(tp) == 6, "the next worker ran every record")
    assert sorted(group.ran("b")) == in_flight + queued


async def test_a_revoke_drains_every_key_in_flight_before_the_new_member_gets_the_partition(
    group: Group,
) -> None:
    """A joining worker takes p1 only after a's three keys in flight there finished and were
    committed; the records queued behind them run in b, in key order, and none runs twice."""
    group.broker.create_topic(TOPIC, 2)
    p0, p1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
    gate = asyncio.Event()
    committed_when_b_started: list[int | None] = []

    async def b_notes_the_commit(number: int, ctx: EventContext) -> None:
        if ctx.partition == 1 and not committed_when_b_started:
            committed_when_b_started.append(group.committed(p1))

    app_a = group.app("a", gated(gate, {0, 1, 2}))
    app_b = group.app("b", b_notes_the_commit)
    await group.start(app_a)
    await eventually(lambda: app_a.worker.owned() == {p0, p1}, "a owns both partitions")
    keys = keys_on(1, 2, 3)
    in_flight = await group.publish(keys)
    queued = await group.publish(keys)
    await eventually(lambda: sorted(group.ran("a")) == in_flight, "three keys in flight on p1")

    await group.start(app_b)
    await eventually(lambda: app_a.worker.rebalances >= 1, "a is draining for the rebalance")
    await asyncio.sleep(0.1)  # a few of b's polls: time for a broken barrier to assign b
    assert app_b.worker.owned() == frozenset(), "b was assigned while a's keys still ran"

    gate.set()
    await eventually(lambda: app_b.worker.owned() == {p1}, "b owns p1")
    await eventually(lambda: group.committed(p1) == 6, "p1 is committed to its end")
    assert committed_when_b_started == [3], "a committed its three finished records first"
    assert group.ran("b") == queued
    assert sorted(group.ran("a")) == in_flight
    assert set(group.counts().values()) == {1}


async def test_a_runner_of_a_keyed_lane_cancelled_behind_the_workers_back_is_a_failure(
    group: Group,
) -> None:
    """Cancelling one runner task of a key-ordered partition sets failure and wait() raises."""
    group.broker.create_topic(TOPIC, 1)
    app = group.app("a")
    await group.start(app)
    worker = app.worker
    await eventually(lambda: worker.owned() == {TopicPartition(TOPIC, 0)}, "a owns p0")
    runners = [
        task
        for task in asyncio.all_tasks()
        if task.get_name().startswith("eventkit-lane-") and not task.done()
    ]
    assert len(runners) == fast().key_concurrency
    runners[3].cancel()
    await eventually(lambda: worker.failure is not None, "the failure is visible")
    assert "was cancelled" in str(worker.failure)
    with pytest.raises(RuntimeError, match="was cancelled"):
        await asyncio.wait_for(worker.wait(), 5.0)
