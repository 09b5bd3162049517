"""``KeyedLane`` and ``InFlightLimit`` on their own: a scripted dispatch, a fake clock.

Waits are on conditions over a bounded number of event-loop turns, never on wall time: the
lane's runners only ever wait on events, the fake clock or the scripted handler's gates.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventkit import ConfigurationError
from eventkit.fakeclock import FakeClock
from eventkit.offsets import PartitionOffsets
from eventkit.outcomes import Outcome
from eventkit.ports import TopicPartition
from eventkit.transports.memory import StoredRecord
from eventkit.worker import WorkerConfig
from eventkit.worker.inflight import InFlightLimit
from eventkit.worker.keyed_lane import KeyedLane
from eventkit.worker.lane import Lane, Progress

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from eventkit.delivery import Delivery

TP = TopicPartition("orders", 0)


def records(
    keys: Sequence[bytes | None], *, tp: TopicPartition = TP, first: int = 0
) -> list[StoredRecord]:
    """One record per key, at offsets ``first``, ``first + 1``, ... of ``tp``."""
    return [
        StoredRecord(tp.topic, tp.partition, offset, 0, key, b"{}")
        for offset, key in enumerate(keys, start=first)
    ]


async def settle(predicate: Callable[[], bool], message: str = "", turns: int = 2000) -> None:
    """Let the loop run until ``predicate()`` holds; ``AssertionError`` after ``turns`` turns."""
    for _ in range(turns):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"not true after {turns} loop turns: {message or predicate}")


async def spin(turns: int = 100) -> None:
    """Give every runnable task ``turns`` turns of the loop (to show something did not happen)."""
    for _ in range(turns):
        await asyncio.sleep(0)


class PauseLog:
    """The worker's side of pausing: the reasons the partition is paused for, and each change."""

    def __init__(self) -> None:
        self.reasons: set[str] = set()
        self.changes: list[tuple[str, bool]] = []

    def want_pause(self, tp: TopicPartition, reason: str, paused: bool) -> None:
        self.changes.append((reason, paused))
        if paused:
            self.reasons.add(reason)
        else:
            self.reasons.discard(reason)


class CheckedOffsets(PartitionOffsets):
    """``PartitionOffsets`` that checks, at every finish, that the position passes nothing
    unfinished (the ground truth is kept here, not read from the tracker)."""

    __slots__ = ("done", "tracked")

    def __init__(self) -> None:
        super().__init__()
        self.tracked: list[int] = []
        self.done: set[int] = set()

    def track_many(self, offsets: list[int]) -> None:
        super().track_many(offsets)
        self.tracked.extend(offsets)

    def finish(self, offset: int) -> None:
        assert offset not in self.done, f"offset {offset} finished twice"
        super().finish(offset)
        self.done.add(offset)
        unfinished = [tracked for tracked in self.tracked if tracked not in self.done]
        position = self.position
        assert position is not None
        assert not unfinished or position <= min(unfinished), (position, unfinished)


class Handler:
    """A scripted dispatch that notes when each record starts and ends.

    A record whose offset has a gate waits for it; ``yields[offset]`` loop turns stand for its
    work; ``outcomes[offset]`` lists the outcomes of its successive calls (then ``HANDLED``).
    """

    def __init__(self) -> None:
        self.started: list[int] = []
        self.returned: list[int] = []
        self.running: set[int] = set()
        #: records running now, over every lane that shares this handler
        self.active = 0
        self.peak = 0
        self.gates: dict[int, asyncio.Event] = {}
        self.yields: dict[int, int] = {}
        self.outcomes: dict[int, list[Outcome]] = {}
        #: called at every start with the delivery: the tests' invariant checks
        self.on_start: Callable[[Delivery], None] | None = None

    async def __call__(self, delivery: Delivery) -> Outcome:
        offset = delivery.record.offset
        if self.on_start is not None:
            self.on_start(delivery)
        self.started.append(offset)
        self.running.add(offset)
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            gate = self.gates.get(offset)
            if gate is not None:
                await gate.wait()
            for _ in range(self.yields.get(offset, 0)):
                await asyncio.sleep(0)
        finally:
            self.running.discard(offset)
            self.active -= 1
        scripted = self.outcomes.get(offset)
        outcome = scripted.pop(0) if scripted else Outcome.HANDLED
        self.returned.append(offset)
        return outcome

    def gate(self, *offsets: int) -> asyncio.Event:
        """One gate that the given records wait for."""
        event = asyncio.Event()
        for offset in offsets:
            self.gates[offset] = event
        return event


def keyed_lane(
    handler: Handler,
    *,
    tp: TopicPartition = TP,
    offsets: PartitionOffsets | None = None,
    owner: PauseLog | None = None,
    clock: FakeClock | None = None,
    limit: InFlightLimit | None = None,
    **config: int | float,
) -> KeyedLane:
    """A started ``KeyedLane`` over ``handler``; ``config`` overrides ``WorkerConfig``."""
    lane = KeyedLane(
        tp,
        epoch=1,
        dispatch=handler,
        offsets=offsets if offsets is not None else PartitionOffsets(),
        owner=owner if owner is not None else PauseLog(),
        progress=Progress(),
        clock=clock if clock is not None else FakeClock(),
        config=WorkerConfig(**config),  # type: ignore[arg-type]
        limit=limit,
    )
    lane.start()
    return lane


async def close(lane: KeyedLane | Lane) -> None:
    """Close the lane and wait for its tasks to end (each must end on its own)."""
    lane.close()
    done, pending = await asyncio.wait(lane.tasks(), timeout=5.0)
    assert not pending, "a runner did not end after close"
    for task in done:
        if not task.cancelled():
            assert task.exception() is None


KEYS = st.sampled_from([b"a", b"b", b"c", None])


@given(
    plan=st.lists(st.tuples(KEYS, st.integers(0, 6)), min_size=1, max_size=40),
    concurrency=st.integers(1, 5),
    batch=st.integers(1, 40),
)
@settings(max_examples=80, deadline=None)
def test_records_of_one_key_start_in_offset_order_one_at_a_time_under_random_delays(
    plan: list[tuple[bytes | None, int]], concurrency: int, batch: int
) -> None:
    """Whatever the keys, work lengths, runner count and fetch sizes: a record starts only
    after every earlier record of its key returned, the commit position never passes an
    unfinished record, and it reaches the end once all ran."""

    async def scenario() -> None:
        handler = Handler()
        offsets = CheckedOffsets()
        keys = [key for key, _ in plan]
        handler.yields = {offset: work for offset, (_, work) in enumerate(plan)}

        def in_key_order(delivery: Delivery) -> None:
            offset = delivery.record.offset
            earlier = [o for o in range(offset) if keys[o] == keys[offset]]
            assert all(o in handler.returned for o in earlier), (offset, handler.returned)
            assert not any(keys[o] == keys[offset] for o in handler.running), offset

        handler.on_start = in_key_order
        lane = keyed_lane(handler, offsets=offsets, key_concurrency=concurrency)
        fetched = records(keys)
        for first in range(0, len(fetched), batch):
            lane.enqueue(fetched[first : first + batch])
            await spin(3)
        await settle(
            lambda: len(handler.returned) == len(plan) or any(t.done() for t in lane.tasks()),
            "every record ran",
            20_000,
        )
        await close(lane)  # raises the error of a runner that died (a broken invariant)
        assert sorted(handler.started) == list(range(len(plan)))
        assert handler.peak <= concurrency
        assert offsets.position == len(plan)
        assert (lane.busy, lane.queued, lane.in_flight()) == (False, 0, [])

    asyncio.run(scenario())


async def test_records_of_different_keys_run_at_the_same_time() -> None:
    """Two records of one partition that each wait for the other to start both finish: they
    overlap, which a sequential lane could never do."""
    handler = Handler()
    seen_a, seen_b = asyncio.Event(), asyncio.Event()

    async def each_waits_for_the_other(delivery: Delivery) -> Outcome:
        mine, theirs = (seen_a, seen_b) if delivery.record.key == b"a" else (seen_b, seen_a)
        mine.set()
        await asyncio.wait_for(theirs.wait(), 5.0)
        return await handler(delivery)

    lane = KeyedLane(
        TP,
        epoch=1,
        dispatch=each_waits_for_the_other,
        offsets=PartitionOffsets(),
        owner=PauseLog(),
        progress=Progress(),
        clock=FakeClock(),
        config=WorkerConfig(key_concurrency=2),
    )
    lane.start()
    lane.enqueue(records([b"a", b"b"]))
    await settle(lambda: len(handler.returned) == 2, "both records ran")
    await close(lane)


async def test_a_none_key_is_one_key_its_records_run_in_order_one_at_a_time() -> None:
    """Records without a key are ordered among themselves, like any one key."""
    handler = Handler()
    gate = handler.gate(0)
    lane = keyed_lane(handler, key_concurrency=4)
    lane.enqueue(records([None, None, None, b"k"]))
    await settle(lambda: handler.started == [0, 3], "the first keyless record and k started")
    await spin()
    assert handler.started == [0, 3], "no keyless record started beside the first"
    gate.set()
    await settle(lambda: len(handler.returned) == 4)
    assert [offset for offset in handler.started if offset < 3] == [0, 1, 2]
    await close(lane)


async def test_the_commit_position_stops_at_an_unfinished_record_while_later_keys_finish() -> None:
    """Record 0 (key a) runs while the records of keys b and c behind it all finish: the
    position stays at 0; once record 0 finishes it jumps to the end."""
    handler = Handler()
    offsets = PartitionOffsets()
    gate = handler.gate(0)
    lane = keyed_lane(handler, offsets=offsets, key_concurrency=3)
    lane.enqueue(records([b"a", b"b", b"c", b"b", b"c", b"b"]))
    await settle(lambda: sorted(handler.returned) == [1, 2, 3, 4, 5], "b and c finished")
    assert offsets.position == 0
    assert offsets.unfinished == 1
    gate.set()
    await settle(lambda: offsets.position == 6, "the position reached the end")
    await close(lane)


async def test_a_deferred_record_holds_its_key_pauses_the_partition_and_blocks_commits() -> None:
    """Record 0 (key a) is deferred twice: the partition pauses, key a's next record waits,
    key b carries on, the position stays at 0, and the queued deliveries offered for claiming
    ahead leave key a out. When record 0 is final, key a goes on and the partition resumes."""
    handler = Handler()
    clock = FakeClock()
    owner = PauseLog()
    offsets = PartitionOffsets()
    handler.outcomes[0] = [Outcome.DEFERRED, Outcome.DEFERRED]
    b_gate = handler.gate(1)
    lane = keyed_lane(
        handler,
        clock=clock,
        owner=owner,
        offsets=offsets,
        key_concurrency=4,
        defer_base_delay=1.0,
    )
    lane.enqueue(records([b"a", b"b", b"a", b"b"]))
    await settle(lambda: clock.sleepers == 1, "record 0 waits before its second try")
    assert owner.reasons == {"deferred"}
    assert handler.started == [0, 1]
    assert [delivery.record.offset for delivery in lane.upcoming(10)] == [3]
    b_gate.set()
    await settle(lambda: 3 in handler.returned, "key b carried on")
    assert 2 not in handler.started, "key a's next record waits behind the deferred one"
    assert offsets.position == 0
    assert [delivery.record.offset for delivery in lane.in_flight()] == [0]

    clock.advance(1.0)
    await settle(lambda: handler.started.count(0) == 2 and clock.sleepers == 1, "deferred again")
    assert 2 not in handler.started
    clock.advance(2.0)
    await settle(lambda: offsets.position == 4, "record 0 and then record 2 finished")
    assert handler.started.count(0) == 3
    assert handler.started.index(2) > len(handler.started) - 2, "record 2 ran last"
    assert owner.reasons == set()
    assert owner.changes == [("deferred", True), ("deferred", False)]
    await close(lane)


async def test_close_lets_running_keys_finish_and_hands_back_the_queue_in_offset_order() -> None:
    """Three keys in flight when the lane closes: they finish, nothing further starts, and
    the records queued behind them come back in offset order."""
    handler = Handler()
    offsets = PartitionOffsets()
    gate = handler.gate(0, 1, 2)
    lane = keyed_lane(handler, offsets=offsets, key_concurrency=8)
    lane.enqueue(records([b"a", b"b", b"c", b"c", b"a", b"b"]))
    await settle(lambda: handler.running == {0, 1, 2}, "three keys are in flight")
    lane.close()
    assert lane.is_closing()
    gate.set()
    await close(lane)
    assert sorted(handler.started) == [0, 1, 2]
    assert lane.in_flight() == []
    assert [delivery.record.offset for delivery in lane.take_unstarted()] == [3, 4, 5]
    assert (lane.queued, lane.busy) == (0, False)
    assert offsets.position == 3


async def test_records_cut_off_at_the_deadline_stay_in_flight_for_the_drain_to_hand_back() -> None:
    """Runners cancelled mid-record (the drain deadline) leave those records in ``in_flight``
    and unfinished; a record waiting in its defer back-off is cancelled at close at once."""
    handler = Handler()
    clock = FakeClock()
    offsets = PartitionOffsets()
    handler.gate(0, 1)  # never released
    handler.outcomes[2] = [Outcome.DEFERRED]
    limit = InFlightLimit(10)
    lane = keyed_lane(handler, clock=clock, offsets=offsets, limit=limit, key_concurrency=4)
    lane.enqueue(records([b"a", b"b", b"c", b"a", b"c"]))
    await settle(lambda: clock.sleepers == 1 and len(handler.running) == 2, "all three started")
    lane.close()
    await spin()
    waiting = [task for task in lane.tasks() if task.done()]
    assert len(waiting) == 2, "the deferred record's runner and the idle one ended at once"
    for task in lane.tasks():
        task.cancel()
    await asyncio.wait(lane.tasks())
    assert sorted(delivery.record.offset for delivery in lane.in_flight()) == [0, 1, 2]
    assert [delivery.record.offset for delivery in lane.take_unstarted()] == [3, 4]
    assert offsets.position == 0
    assert limit.running == 0, "cancelled records gave their slots back"


async def test_a_full_buffer_pauses_the_partition_and_it_resumes_at_half() -> None:
    """max_buffered=4: six queued records pause the partition; it resumes once two remain."""
    handler = Handler()
    owner = PauseLog()
    gate = handler.gate(0)
    lane = keyed_lane(handler, owner=owner, max_buffered=4, key_concurrency=2)
    lane.enqueue(records([b"a"] * 7))
    await settle(lambda: handler.running == {0})
    assert owner.reasons == {"backpressure"}
    assert lane.queued == 6
    gate.set()
    await settle(lambda: len(handler.returned) == 7)
    assert owner.changes == [("backpressure", True), ("backpressure", False)]
    await close(lane)


async def test_max_in_flight_caps_records_running_over_keyed_and_sequential_lanes() -> None:
    """Two keyed lanes of 8 runners and a sequential lane share a cap of 3: exactly three
    records run at once, the rest start as slots free up, and no slot is left taken."""
    handler = Handler()
    limit = InFlightLimit(3)
    tps = [TopicPartition("orders", partition) for partition in range(3)]
    gate = handler.gate(*range(6))  # offsets 0-5 of every partition
    keyed = [keyed_lane(handler, tp=tp, limit=limit, key_concurrency=8) for tp in tps[:2]]
    sequential = Lane(
        tps[2],
        epoch=1,
        dispatch=handler,
        offsets=PartitionOffsets(),
        owner=PauseLog(),
        progress=Progress(),
        clock=FakeClock(),
        config=WorkerConfig(),
        limit=limit,
    )
    sequential.start()
    keys = [f"k{number}".encode() for number in range(6)]
    for lane in keyed:
        lane.enqueue(records(keys, tp=lane.tp))
    sequential.enqueue(records(keys, tp=tps[2]))
    await settle(lambda: handler.active == 3, "three records run")
    await spin()
    assert handler.active == 3, "no fourth record started"
    assert limit.running == 3
    gate.set()
    await settle(lambda: len(handler.returned) == 18, "every record ran")
    assert handler.peak == 3
    assert limit.running == 0
    lanes: list[KeyedLane | Lane] = [*keyed, sequential]
    for each in lanes:
        await close(each)


async def test_a_lane_waiting_for_a_slot_is_cancelled_by_close_and_holds_none() -> None:
    """A lane whose next record waits for a worker-wide slot ends at close without starting
    it; the record is handed back as queued and the cap is intact afterwards."""
    handler = Handler()
    limit = InFlightLimit(1)
    gate = handler.gate(0)
    first = keyed_lane(handler, limit=limit, key_concurrency=2)
    second = keyed_lane(handler, tp=TopicPartition("orders", 1), limit=limit)
    first.enqueue(records([b"a"]))
    await settle(lambda: handler.running == {0})
    second.enqueue(records([b"x"], tp=second.tp))
    await spin()
    assert limit.waiters, "the second lane waits for the slot"
    await close(second)
    assert [delivery.record.offset for delivery in second.take_unstarted()] == [0]
    gate.set()
    await settle(lambda: handler.returned == [0])
    assert limit.running == 0
    await close(first)


def sequential_lane(handler: Handler, tp: TopicPartition, limit: InFlightLimit) -> Lane:
    lane = Lane(
        tp,
        epoch=1,
        dispatch=handler,
        offsets=PartitionOffsets(),
        owner=PauseLog(),
        progress=Progress(),
        clock=FakeClock(),
        config=WorkerConfig(),
        limit=limit,
    )
    lane.start()
    return lane


async def test_a_sequential_lane_gives_its_slot_up_to_a_waiting_lane_between_records() -> None:
    """Cap 1: lane A keeps its slot over back-to-back records only while nobody waits; with
    lane B waiting, A hands it over after its record and queues for the next; idle lanes and a
    lane cancelled mid-record hold no slot."""
    handler = Handler()
    limit = InFlightLimit(1)
    gate = handler.gate(0)
    never = handler.gate(20)
    lane_a = sequential_lane(handler, TP, limit)
    lane_b = sequential_lane(handler, TopicPartition("orders", 1), limit)
    lane_a.enqueue(records([None, None]))
    await settle(lambda: handler.running == {0})
    lane_b.enqueue(records([None], tp=lane_b.tp, first=10))
    await spin()
    assert handler.running == {0}, "b waits for the slot"
    gate.set()
    await settle(lambda: len(handler.returned) == 3)
    assert handler.returned == [0, 10, 1], "a and b took turns"
    assert handler.peak == 1
    assert limit.running == 0, "idle lanes hold no slot"

    lane_a.enqueue(records([None], first=20))
    await settle(lambda: handler.running == {20})
    assert not never.is_set()
    assert lane_a.task is not None
    lane_a.task.cancel()
    await asyncio.wait([lane_a.task])
    assert [delivery.record.offset for delivery in lane_a.in_flight()] == [20]
    assert limit.running == 0, "the cancelled record gave its slot back"
    await close(lane_b)


async def test_the_limit_hands_a_freed_slot_to_the_longest_waiter() -> None:
    """With the cap reached, waiters get slots in arrival order and the count never passes
    the cap; a newcomer cannot overtake a waiter."""
    limit = InFlightLimit(1)
    limit.running = 1
    order: list[str] = []

    async def wait(name: str) -> None:
        await limit.wait()
        order.append(name)

    tasks = [asyncio.create_task(wait(name)) for name in ("first", "second")]
    await spin(5)
    limit.release()
    await spin(5)
    assert order == ["first"]
    assert limit.running == 1
    assert limit.running >= limit.cap, "a newcomer would have to wait too"
    limit.release()
    await asyncio.gather(*tasks)
    assert order == ["first", "second"]
    limit.release()
    assert limit.running == 0


async def test_a_waiter_cancelled_as_it_is_handed_a_slot_passes_it_on() -> None:
    """Cancelled between being handed a slot and resuming, a waiter gives the slot to the
    next one instead of leaking it; a waiter cancelled before is skipped."""
    limit = InFlightLimit(1)
    limit.running = 1
    early = asyncio.create_task(limit.wait())
    handed = asyncio.create_task(limit.wait())
    last = asyncio.create_task(limit.wait())
    await spin(5)
    early.cancel()
    await asyncio.wait([early])
    limit.release()  # skips the cancelled waiter, hands the slot to ``handed``
    handed.cancel()  # before it resumed
    await asyncio.wait([handed, last])
    assert handed.cancelled()
    assert last.done()
    assert not last.cancelled()
    assert limit.running == 1
    limit.release()
    assert limit.running == 0


@pytest.mark.parametrize("field", ["max_in_flight", "key_concurrency"])
def test_max_in_flight_and_key_concurrency_must_be_at_least_one(field: str) -> None:
    """Zero is refused when the config is made, naming the field."""
    with pytest.raises(ConfigurationError, match=f"WorkerConfig.{field} must be at least 1"):
        WorkerConfig(**{field: 0})
