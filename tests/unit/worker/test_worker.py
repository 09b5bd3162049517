"""The worker on the in-memory broker: rebalances, draining, back-pressure and commits.

Real asyncio and the system clock, with short ``WorkerConfig`` timings; every wait is on a
condition with a deadline. Two workers of one group are two ``EventApp`` instances of the same
service built by ``make_app``, as two processes of one deployment would be.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from eventkit import (
    EventApp,
    EventContext,
    EventPublisher,
    Outcome,
    RetryPolicy,
    TopicPartition,
    WorkerConfig,
)
from eventkit.clock import SystemClock
from eventkit.idempotency import InMemoryIdempotencyStore
from eventkit.transports.memory import ConsumerCrashedError, MemoryBroker, default_partition
from tests.unit.worker.support import EVENT, GROUP, SERVICE, TOPIC, eventually, fast

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from typing import TypeAlias

    from eventkit.transports.memory import MemoryConsumer
    from eventkit.worker import Worker

    Handler: TypeAlias = Callable[[dict[str, Any], EventContext], Awaitable[None]]
    #: what a test adds to the service's handler: it gets the payload number and the context
    Hook: TypeAlias = Callable[[int, EventContext], Awaitable[None]]


async def stop_within(app: EventApp, seconds: float) -> bool:
    """``app.stop()``, which must return within ``seconds``; returns what it returned.

    The clock is checked too: ``wait_for`` waits for a cancelled stop() that swallows the
    cancellation, so it alone would not fail a stop that overran.
    """
    started = time.monotonic()
    clean = await asyncio.wait_for(app.stop(), seconds)
    elapsed = time.monotonic() - started
    assert elapsed < seconds, f"stop() took {elapsed:.2f} s"
    return clean


def key_for(partition: int, partitions: int) -> str:
    """A record key that Kafka's default partitioner puts on ``partition``."""
    return next(
        key
        for key in (f"k{number}" for number in range(1000))
        if default_partition(key.encode(), partitions) == partition
    )


class LongestBackOff(random.Random):
    """Full jitter that always picks the ceiling, so a back-off lasts its whole max_delay."""

    def uniform(self, a: float, b: float) -> float:
        return b


@dataclass
class Ledger:
    """Every handler run over every worker of the group: the ground truth of the asserts."""

    runs: Counter[int] = field(default_factory=Counter)
    by_worker: dict[str, list[int]] = field(default_factory=dict)

    def record(self, worker: str, number: int) -> None:
        self.runs[number] += 1
        self.by_worker.setdefault(worker, []).append(number)

    def ran(self, worker: str) -> list[int]:
        return self.by_worker.get(worker, [])


def handler(ledger: Ledger, worker: str, hook: Hook | None = None) -> Handler:
    """The service's handler as one worker runs it: count the run, then the test's hook."""

    async def handle(event: dict[str, Any], ctx: EventContext) -> None:
        ledger.record(worker, event["n"])
        if hook is None:
            await asyncio.sleep(0)
        else:
            await hook(event["n"], ctx)

    return handle


def make_app(
    handle: Handler,
    *,
    idempotency: bool = False,
    retry: RetryPolicy | None = None,
    config: WorkerConfig | None = None,
) -> EventApp:
    """One worker process of the service; every call gives a member of the same group."""
    app = EventApp(
        SERVICE, group_id=GROUP, idempotency=idempotency, retry=retry, worker=config or fast()
    )
    app.handler(EVENT, topic=TOPIC)(handle)
    return app


class Harness:
    """One broker, an upstream producer, and the workers started on it (aborted at the end)."""

    def __init__(self) -> None:
        self.broker = MemoryBroker()
        self.group = GROUP
        self._transport = self.broker.publisher()
        self._producer = EventPublisher(self._transport, source_service="upstream")
        self._apps: list[EventApp] = []
        self._workers: list[Worker] = []
        self._published = 0

    def topic(self, partitions: int) -> tuple[TopicPartition, ...]:
        self.broker.create_topic(TOPIC, partitions)
        return self.broker.partitions_for(TOPIC)

    async def publish(self, count: int, *, key: str | None = None) -> list[int]:
        """Publish ``count`` events numbered on from the last one; returns their numbers."""
        numbers = list(range(self._published, self._published + count))
        self._published += count
        for number in numbers:
            await self._producer.publish(TOPIC, EVENT, {"n": number}, key=key)
        return numbers

    def consumer(self) -> MemoryConsumer:
        return self.broker.consumer(self.group)

    async def start(
        self,
        app: EventApp,
        *,
        store: InMemoryIdempotencyStore | None = None,
        consumer: MemoryConsumer | None = None,
        rng: random.Random | None = None,
    ) -> MemoryConsumer:
        consumer = consumer or self.consumer()
        self._apps.append(app)
        await app.start(
            consumer=consumer,
            publisher=self.broker.publisher(),
            store=store,
            clock=SystemClock(),
            rng=rng,
        )
        self._workers.append(app.worker)
        return consumer

    def committed(self, tp: TopicPartition) -> int | None:
        return self.broker.committed(self.group, tp)

    def lag(self) -> int:
        """Records published and not committed, over the topic's partitions."""
        return sum(
            self.broker.end_offset(tp) - (self.committed(tp) or 0)
            for tp in self.broker.partitions_for(TOPIC)
        )

    def committed_to_end(self) -> bool:
        return all(
            self.committed(tp) == self.broker.end_offset(tp)
            for tp in self.broker.partitions_for(TOPIC)
        )

    async def open(self) -> None:
        await self._transport.start()

    async def close(self) -> None:
        """Abort whatever still runs, also a worker whose stop() was cut off by a timeout."""
        for app in self._apps:
            if app.running:
                await app.abort()
        for worker in self._workers:
            await worker.abort()  # a no-op for a worker that stopped
        await self._transport.stop()


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    harness = Harness()
    await harness.open()
    try:
        yield harness
    finally:
        await harness.close()


@pytest.mark.parametrize("shared_store", [False, True], ids=["no-store", "shared-store"])
async def test_two_workers_split_the_partitions_and_one_takes_all_over_when_the_other_stops(
    harness: Harness, shared_store: bool
) -> None:
    """Partitions split, then move to the survivor; nothing is lost, nothing is run twice with
    a shared store, and every partition is committed to its end."""
    partitions = frozenset(harness.topic(4))
    store = InMemoryIdempotencyStore() if shared_store else None
    ledger = Ledger()
    app_a = make_app(handler(ledger, "a"), idempotency=shared_store)
    app_b = make_app(handler(ledger, "b"), idempotency=shared_store)
    await harness.start(app_a, store=store)
    await eventually(lambda: app_a.worker.owned() == partitions, "a owns every partition")
    counts_a = app_a.dispatcher.counts  # the same dict goes on counting until a stops

    def split() -> bool:
        owned_a, owned_b = app_a.worker.owned(), app_b.worker.owned()
        return bool(owned_a) and bool(owned_b) and owned_a | owned_b == partitions

    published: list[int] = []
    for batch in range(30):
        published += await harness.publish(10)
        if batch == 8:
            assert harness.lag() > 0, "records are pending when the second worker joins"
            await harness.start(app_b, store=store)
        if batch == 18:
            await eventually(split, "a and b split the partitions")
            assert not app_a.worker.owned() & app_b.worker.owned()
            assert harness.lag() > 0, "records are pending when the first worker stops"
            assert await app_a.stop()
        await asyncio.sleep(0.01)  # pace the producer so that both faults land mid-stream

    await eventually(lambda: app_b.worker.owned() == partitions, "b took every partition over")
    await eventually(lambda: set(ledger.runs) == set(published), "every event was handled")
    await eventually(harness.committed_to_end, "every partition is committed to its end")
    assert ledger.ran("a")
    assert ledger.ran("b")
    handled = counts_a[Outcome.HANDLED] + app_b.dispatcher.counts[Outcome.HANDLED]
    assert handled == ledger.runs.total()
    if shared_store:
        assert set(ledger.runs.values()) == {1}, "exactly once with a shared store"
        assert handled == len(published)


@pytest.mark.parametrize("shared_store", [False, True], ids=["no-store", "shared-store"])
async def test_a_joining_worker_waits_for_the_in_flight_record_which_is_committed_first(
    harness: Harness, shared_store: bool
) -> None:
    """Revoke drains first: B gets the partition only after A's slow record finished and was
    committed; B never runs it again (even with idempotency off) and at once runs the records
    queued behind it (with a shared store: their claims taken ahead were released)."""
    p0, p1 = harness.topic(2)
    store = InMemoryIdempotencyStore() if shared_store else None
    release = asyncio.Event()
    ledger = Ledger()
    committed_when_b_started: list[int | None] = []
    slow = 3  # the fourth record of p1: offset 3

    def worker(name: str) -> EventApp:
        async def hook(number: int, ctx: EventContext) -> None:
            if name == "b" and ctx.partition == 1 and not committed_when_b_started:
                committed_when_b_started.append(harness.committed(p1))
            if number == slow:
                await release.wait()

        return make_app(handler(ledger, name, hook), idempotency=shared_store)

    app_a, app_b = worker("a"), worker("b")
    await harness.start(app_a, store=store)
    await eventually(lambda: app_a.worker.owned() == {p0, p1}, "a owns both partitions")
    before = await harness.publish(slow, key=key_for(1, 2))
    assert await harness.publish(1, key=key_for(1, 2)) == [slow]
    behind = await harness.publish(3, key=key_for(1, 2))
    on_p0 = await harness.publish(3, key=key_for(0, 2))
    await eventually(lambda: ledger.runs[slow] == 1, "a is running the slow record")
    assert [n for n in ledger.ran("a") if n in before] == before

    await harness.start(app_b, store=store)
    # b rejoined (its first revoke listener ran) and a is in its revoke listener, draining
    await eventually(
        lambda: app_b.worker.rebalances >= 1 and app_a.worker.rebalances >= 2,
        "the rebalance started",
    )
    await asyncio.sleep(0.1)  # a few of b's polls: time for a broken barrier to assign b
    assert app_b.worker.owned() == frozenset(), "b was assigned while a's record still ran"
    assert not ledger.ran("b")

    release.set()
    await eventually(lambda: app_b.worker.owned() == {p1}, "b owns p1")
    await eventually(lambda: app_a.worker.owned() == {p0}, "a keeps p0")
    everything = {*before, slow, *behind, *on_p0}
    await eventually(lambda: set(ledger.runs) == everything, "every event was handled")
    await eventually(harness.committed_to_end, "both partitions are committed to their end")
    assert committed_when_b_started == [slow + 1], "a committed its in-flight record first"
    assert ledger.runs[slow] == 1
    assert set(ledger.runs.values()) == {1}, "no record ran twice"
    # the records queued behind the slow one never started in a: they moved to b
    assert [n for n in ledger.ran("b") if n in behind] == behind


LONG_BACK_OFF = RetryPolicy(max_attempts=5, base_delay=30.0, max_delay=30.0)


def retrying_worker(
    harness: Harness, ledger: Ledger, name: str, *, fails: bool, seen: list[int | None]
) -> EventApp:
    """A worker with 30 s back-offs whose handler fails record 1 when ``fails``; otherwise it
    notes in ``seen`` the committed offset of the partition at the moment it runs record 1."""

    async def hook(number: int, ctx: EventContext) -> None:
        if number != 1:
            return
        if fails:
            raise ConnectionError("downstream is down")
        seen.append(harness.committed(TopicPartition(ctx.topic, ctx.partition)))

    return make_app(
        handler(ledger, name, hook),
        idempotency=True,
        retry=LONG_BACK_OFF,
        config=fast(drain_timeout=10.0, revoke_drain_timeout=10.0),
    )


async def test_stop_cancels_a_retry_back_off_at_once_and_releases_its_claim(
    harness: Harness,
) -> None:
    """A record waiting in a 30 s back-off: stop returns at once, the record stays uncommitted
    and its claim is released, so the next worker runs it without waiting for the lease."""
    (tp,) = harness.topic(1)
    store = InMemoryIdempotencyStore()
    ledger = Ledger()
    seen: list[int | None] = []
    app_a = retrying_worker(harness, ledger, "a", fails=True, seen=seen)
    await harness.start(app_a, store=store, rng=LongestBackOff())
    await harness.publish(2)
    await eventually(lambda: ledger.runs == {0: 1, 1: 1}, "a ran both, the second failed")
    # the first record is final once its queued DONE mark is written, before the wait
    await eventually(
        lambda: app_a.worker.unfinished() == 1, "the failed record waits in its back-off"
    )

    # well before the 30 s back-off and the 10 s drain_timeout
    await stop_within(app_a, 2.0)
    assert harness.committed(tp) == 1, "committed up to the waiting record, not past it"
    assert ledger.runs[1] == 1, "no second attempt ran during the stop"

    app_b = retrying_worker(harness, ledger, "b", fails=False, seen=seen)
    await harness.start(app_b, store=store)
    # within 5 s: a lease still held (30 s, renewed across the back-off) would make b wait
    await eventually(lambda: ledger.ran("b") == [1], "b ran the record at once")
    await eventually(lambda: harness.committed(tp) == 2, "the record is committed")
    assert seen == [1]
    assert app_b.dispatcher.counts[Outcome.HANDLED] == 1


async def test_a_rebalance_cancels_a_retry_back_off_at_once_and_the_new_owner_runs_it(
    harness: Harness,
) -> None:
    """A record in a 30 s back-off does not hold the revoke for its 10 s drain: the partition
    moves at once, committed up to the record, and the new owner claims and runs it."""
    p0, p1 = harness.topic(2)
    store = InMemoryIdempotencyStore()
    ledger = Ledger()
    seen: list[int | None] = []
    app_a = retrying_worker(harness, ledger, "a", fails=True, seen=seen)
    app_b = retrying_worker(harness, ledger, "b", fails=False, seen=seen)
    await harness.start(app_a, store=store, rng=LongestBackOff())
    await eventually(lambda: app_a.worker.owned() == {p0, p1}, "a owns both partitions")
    await harness.publish(2, key=key_for(1, 2))
    await eventually(lambda: ledger.runs == {0: 1, 1: 1}, "a ran both, the second failed")
    # the first record is final once its queued DONE mark is written, before the wait
    await eventually(
        lambda: app_a.worker.unfinished() == 1, "the failed record waits in its back-off"
    )

    await harness.start(app_b, store=store)
    await eventually(lambda: ledger.ran("b") == [1], "b ran the record at once")
    await eventually(lambda: harness.committed(p1) == 2, "the record is committed")
    assert seen == [1], "a committed up to the record before it gave the partition up"
    assert app_a.worker.owned() == {p0}
    assert ledger.ran("a") == [0, 1], "a made no second attempt"


async def test_a_back_off_that_begins_while_stop_drains_is_cut_at_once(harness: Harness) -> None:
    """An attempt that fails while stop() drains does not hold the drain for its 30 s back-off:
    stop returns right after the failure, with no second attempt and the record uncommitted."""
    (tp,) = harness.topic(1)
    gate = asyncio.Event()
    ledger = Ledger()

    async def hook(number: int, ctx: EventContext) -> None:
        if number == 1:
            await gate.wait()
            raise ConnectionError("downstream is down")

    app = make_app(handler(ledger, "a", hook), retry=LONG_BACK_OFF, config=fast(drain_timeout=10.0))
    await harness.start(app, rng=LongestBackOff())
    await harness.publish(2)
    await eventually(lambda: ledger.runs == {0: 1, 1: 1}, "record 1 is in its handler")
    worker = app.worker
    stopping = asyncio.create_task(app.stop())
    await eventually(lambda: not worker.running, "stop began")
    for _ in range(10):
        await asyncio.sleep(0)  # turns of the loop: stop cancels the fetch task, closes lanes
    gate.set()  # the attempt fails now, after the drain began

    failed_at = time.monotonic()
    done, _ = await asyncio.wait([stopping], timeout=2.0)  # not the 30 s back-off, 10 s drain
    if not done:
        stopping.cancel()  # the harness then aborts the worker
        await asyncio.wait([stopping], timeout=1.0)
    assert done, "stop() waits in the back-off until its drain deadline"
    assert time.monotonic() - failed_at < 2.0
    assert ledger.runs[1] == 1, "no second attempt"
    assert harness.committed(tp) == 1


async def test_stop_reports_a_record_cut_out_of_its_back_off_as_unfinished(
    harness: Harness,
) -> None:
    """stop() is True only if every started record finished (R7: exit 0 only then); a record
    cancelled in its retry back-off did not finish, so stop() says False."""
    harness.topic(1)
    ledger = Ledger()
    app = retrying_worker(harness, ledger, "a", fails=True, seen=[])
    await harness.start(app, store=InMemoryIdempotencyStore(), rng=LongestBackOff())
    await harness.publish(2)
    await eventually(lambda: ledger.runs == {0: 1, 1: 1}, "a ran both, the second failed")
    # the first record is final once its queued DONE mark is written, before the wait
    await eventually(
        lambda: app.worker.unfinished() == 1, "the failed record waits in its back-off"
    )

    assert await stop_within(app, 2.0) is False


@pytest.mark.parametrize("shared_store", [False, True], ids=["no-store", "shared-store"])
async def test_a_record_still_running_at_the_drain_deadline_is_left_for_the_next_worker(
    harness: Harness, shared_store: bool
) -> None:
    """drain_timeout=0.2 and a handler that never ends: stop() says False, the record stays
    uncommitted and the next worker of the group handles it."""
    (tp,) = harness.topic(1)
    store = InMemoryIdempotencyStore() if shared_store else None
    never = asyncio.Event()
    ledger = Ledger()

    def worker(name: str) -> EventApp:
        async def hook(number: int, ctx: EventContext) -> None:
            if name == "a" and number == 1:
                await never.wait()

        return make_app(
            handler(ledger, name, hook), idempotency=shared_store, config=fast(drain_timeout=0.2)
        )

    app_a = worker("a")
    await harness.start(app_a, store=store)
    await harness.publish(2)
    await eventually(lambda: ledger.runs == {0: 1, 1: 1}, "a is stuck in the second record")

    assert await stop_within(app_a, 5.0) is False
    assert harness.committed(tp) == 1, "the stuck record is not committed"

    app_b = worker("b")
    await harness.start(app_b, store=store)
    await eventually(lambda: ledger.ran("b") == [1], "b handles the stuck record")
    await eventually(lambda: harness.committed(tp) == 2, "the record is committed")


async def test_an_idle_worker_stops_at_once_even_with_a_long_poll(harness: Harness) -> None:
    """poll_timeout=5 s: stop() of a worker waiting in its poll returns within a second, and
    commits what finished on the way out."""
    (tp,) = harness.topic(1)
    ledger = Ledger()
    # no periodic commit within the test: only stop's own commit can commit the record
    app = make_app(
        handler(ledger, "a"), config=WorkerConfig(poll_timeout=5.0, commit_interval=30.0)
    )
    await harness.start(app)
    await harness.publish(1)
    await eventually(lambda: ledger.runs == {0: 1}, "the worker ran the record")
    assert not app.worker.busy()
    assert harness.committed(tp) is None
    assert await stop_within(app, 1.0)
    assert harness.committed(tp) == 1


async def test_a_cancelled_stop_is_cancelled_even_while_it_waits_for_the_fetch_task(
    harness: Harness,
) -> None:
    """Cancelling stop() (a timeout around it, a second signal) raises CancelledError in the
    caller, also at its first step, while it waits for the fetch task to end."""
    (tp,) = harness.topic(1)
    app = make_app(handler(Ledger(), "a"))
    await harness.start(app)
    await eventually(lambda: app.worker.owned() == {tp}, "the worker owns the partition")
    stopping = asyncio.create_task(app.stop())
    await asyncio.sleep(0)  # one turn: stop() cancels the fetch task and waits for it to end
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping


async def test_a_stop_whose_caller_gave_up_goes_on_and_a_second_stop_waits_for_it(
    harness: Harness,
) -> None:
    """A host's timeout around stop() does not cut the drain short or wedge the worker: a
    later stop() returns once the drain finished, and the record is committed."""
    (tp,) = harness.topic(1)
    release = asyncio.Event()

    async def slow(number: int, ctx: EventContext) -> None:
        await release.wait()

    app = make_app(handler(Ledger(), "a", slow), config=fast(drain_timeout=10.0))
    await harness.start(app)
    await harness.publish(1)
    await eventually(app.worker.busy, "the record is running")

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(app.stop(), 0.1)
    release.set()
    clean = await stop_within(app, 5.0)

    assert clean
    assert not app.running
    assert harness.committed(tp) == 1


async def test_an_assignment_arriving_during_the_shutdown_drain_starts_no_lane(
    harness: Harness,
) -> None:
    """A rebalance that completes while stop() drains (the client still runs) makes no lane
    that would outlive the worker."""
    tp, other = harness.topic(2)
    release = asyncio.Event()

    async def slow(number: int, ctx: EventContext) -> None:
        await release.wait()

    app = make_app(handler(Ledger(), "a", slow))
    await harness.start(app)
    await harness.publish(1, key=key_for(tp.partition, 2))
    await eventually(app.worker.busy, "the record is running")
    worker = app.worker
    await worker.on_partitions_revoked(frozenset({other}))

    stopping = asyncio.create_task(app.stop())
    await asyncio.sleep(0.05)  # stop() is draining the running record
    await worker.on_partitions_assigned(frozenset({other}))
    release.set()
    assert await stopping

    lanes = [t for t in asyncio.all_tasks() if t.get_name().startswith("eventkit-lane")]
    assert [t for t in lanes if not t.done()] == []
    assert other not in worker.owned()


async def test_a_full_buffer_pauses_the_partition_and_every_record_still_runs_in_order(
    harness: Harness,
) -> None:
    """max_buffered=4: the partition pauses while the lane is behind, at most one fetch more is
    held, and all 200 records still run in order and are committed; nothing stays paused."""
    (tp,) = harness.topic(1)
    ledger = Ledger()
    consumer = harness.consumer()
    paused: list[bool] = []
    held: list[int] = []

    async def hook(number: int, ctx: EventContext) -> None:
        paused.append(tp in consumer.paused())
        held.append(consumer.position(tp) - number)  # fetched and not finished
        await asyncio.sleep(0)

    app = make_app(handler(ledger, "a", hook), config=fast(max_buffered=4, max_records=50))
    await harness.publish(200)
    await harness.start(app, consumer=consumer)
    await eventually(lambda: harness.committed(tp) == 200, "committed to the end")
    assert ledger.ran("a") == list(range(200))
    assert any(paused), "the partition was paused at some point"
    assert not all(paused), "and resumed"
    assert max(held) <= 4 + 50
    assert consumer.paused() == frozenset()


async def test_failing_commits_are_counted_and_never_stop_the_worker_or_rerun_a_record(
    harness: Harness,
) -> None:
    """While the broker fails commits, records run once and failures are counted; once it
    accepts commits again they reach the end of every partition."""
    harness.topic(3)
    ledger = Ledger()
    app = make_app(handler(ledger, "a"))
    harness.broker.fail_commits(harness.group, True)
    await harness.start(app)
    published: list[int] = []
    for _ in range(6):
        published += await harness.publish(10)
        await asyncio.sleep(0.01)
    await eventually(lambda: set(ledger.runs) == set(published), "every event was handled")
    await eventually(lambda: app.worker.committer.counts.failed >= 2, "commits failed")
    assert harness.lag() == len(published), "nothing was committed"
    assert app.worker.running
    assert app.worker.failure is None

    harness.broker.fail_commits(harness.group, False)
    await eventually(harness.committed_to_end, "commits reached the end")
    assert set(ledger.runs.values()) == {1}
    counts = app.dispatcher.counts
    assert counts[Outcome.HANDLED] == len(published)
    assert counts[Outcome.DEAD_LETTERED] == counts[Outcome.DEFERRED] == 0


async def test_a_dead_consume_task_is_reported_by_failure_and_wait(harness: Harness) -> None:
    """A consumer that crashes under a running worker sets failure, and wait() raises it."""
    harness.topic(1)
    ledger = Ledger()
    app = make_app(handler(ledger, "a"))
    consumer = await harness.start(app)
    await harness.publish(1)
    await eventually(lambda: ledger.runs == {0: 1}, "the worker runs")
    worker = app.worker
    assert (worker.running, worker.failure) == (True, None)

    consumer.crash()
    await eventually(lambda: worker.failure is not None, "the failure is visible")
    assert isinstance(worker.failure, ConsumerCrashedError)
    assert not worker.running
    with pytest.raises(ConsumerCrashedError):
        await asyncio.wait_for(worker.wait(), 5.0)


async def test_commits_stop_at_an_unfinished_record_and_never_go_backwards(
    harness: Harness,
) -> None:
    """Record 5 blocks while 0-4 finished and 6-9 are fetched: commits stop at exactly 5, and
    after it finishes they reach the end, never moving backwards."""
    (tp,) = harness.topic(1)
    release = asyncio.Event()
    ledger = Ledger()
    history: list[int | None] = []

    async def hook(number: int, ctx: EventContext) -> None:
        if number == 5:
            await release.wait()

    def committed() -> int | None:
        value = harness.committed(tp)
        if not history or history[-1] != value:
            history.append(value)
        return value

    app = make_app(handler(ledger, "a", hook))
    consumer = await harness.start(app)
    await harness.publish(10)
    await eventually(lambda: ledger.ran("a") == [0, 1, 2, 3, 4, 5], "record 5 is running")
    await eventually(lambda: consumer.position(tp) == 10, "records 6-9 were fetched too")
    await eventually(lambda: committed() == 5, "0-4 are committed")
    # one more commit now, as the periodic one would make: still not past record 5
    worker = app.worker
    await worker.committer.commit(worker.owned())
    assert committed() == 5

    before_release = list(history)
    release.set()
    await eventually(lambda: committed() == 10, "committed to the end")
    assert ledger.ran("a") == list(range(10))
    assert before_release[-1] == 5
    assert all(value is None or value <= 5 for value in before_release), before_release
    known = [value for value in history if value is not None]
    assert known == sorted(known), f"a commit went backwards: {history}"


async def test_lanes_run_between_polls_so_a_backlog_is_not_pulled_in_all_at_once(
    harness: Harness,
) -> None:
    """With 2000 records waiting and a handler that never suspends, the fetch loop still lets
    the lane run after each poll: at most two polls' worth of records are fetched and not
    finished at any time, far below max_buffered (the rest waits in the consumer)."""
    (tp,) = harness.topic(1)
    ledger = Ledger()
    consumer = harness.consumer()
    held: list[int] = []

    async def hook(number: int, ctx: EventContext) -> None:
        held.append(consumer.position(tp) - number)  # fetched and not finished

    app = make_app(handler(ledger, "a", hook), config=fast(max_buffered=5000, max_records=50))
    await harness.publish(2000)
    await harness.start(app, consumer=consumer)
    await eventually(lambda: harness.committed(tp) == 2000, "committed to the end")
    assert ledger.ran("a") == list(range(2000))
    assert max(held) <= 2 * 50, f"up to {max(held)} records were fetched ahead"
