"""Idempotency in memory: duplicates, crashes, BUSY leases, store outages and replays."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from eventkit import (
    ConfigurationError,
    EventApp,
    EventContext,
    NonRetryableError,
    Outcome,
    RetryPolicy,
)
from eventkit.fakeclock import FakeClock
from eventkit.idempotency import InMemoryIdempotencyStore
from eventkit.keys import event_key, namespace_for
from eventkit.ports import ClaimRequest, ClaimStatus, TopicPartition
from eventkit.transports.memory import MemoryBroker
from eventkit.transports.partitioner import default_partition
from tests.unit.bus.models import OrderPlaced


def key_of(app: EventApp, event_type: str, event_id: str) -> str:
    return event_key(namespace_for(app.service, app.group_id), event_type, event_id)


async def test_an_event_delivered_twice_runs_its_handler_once() -> None:
    """The same envelope published twice: HANDLED once, then DUPLICATE."""
    app = EventApp("dedup")
    calls = 0

    @app.handler("ORDER_PLACED", topic="orders")
    async def placed(event: OrderPlaced) -> None:
        nonlocal calls
        calls += 1

    async with app.testing() as bus:
        envelope = await bus.publish("orders", "ORDER_PLACED", OrderPlaced(order_id="o", total=1))
        await bus.publish("orders", "ORDER_PLACED", envelope)
        await bus.run_until_idle()
        assert calls == 1
        assert bus.outcomes == {Outcome.HANDLED: 1, Outcome.DUPLICATE: 1}


async def test_the_same_event_on_two_partitions_runs_once() -> None:
    """A re-keyed duplicate on another partition is the same key: one run, one duplicate."""
    app = EventApp("rekeyed")
    calls = 0

    @app.handler("ORDER_PLACED", topic="orders")
    async def placed(event: OrderPlaced) -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)

    async with app.testing(partitions=2) as bus:
        envelope = await bus.publish("orders", "ORDER_PLACED", OrderPlaced(order_id="o", total=1))
        await bus.publish("orders", "ORDER_PLACED", envelope, key="other-key")
        assert {record.partition for record in bus.published("orders")} == {0, 1}
        await bus.run_until_idle()
        assert calls == 1
        assert bus.outcomes[Outcome.HANDLED] == 1
        assert bus.outcomes[Outcome.DUPLICATE] == 1


async def test_a_crash_after_done_and_before_commit_does_not_run_the_handler_again() -> None:
    """Redelivered after a crash, a record already done is a DUPLICATE, not a second run."""
    app = EventApp("crash-after-done")
    calls = 0

    @app.handler("ORDER_PLACED", topic="orders")
    async def placed(event: OrderPlaced) -> None:
        nonlocal calls
        calls += 1

    async with app.testing(partitions=1) as bus:
        await bus.publish("orders", "ORDER_PLACED", OrderPlaced(order_id="o", total=1))
        await bus.run_until(lambda: calls == 1)
        assert bus.committed("orders", 0) is None
        await bus.crash()
        await bus.run_until_idle()
        assert calls == 1
        assert bus.outcomes == {Outcome.HANDLED: 1, Outcome.DUPLICATE: 1}
        assert bus.committed("orders", 0) == 1


async def test_a_crash_mid_handler_leaves_a_lease_that_is_busy_never_duplicate() -> None:
    """The crashed worker's lease makes the redelivery wait (BUSY), then it is handled."""
    app = EventApp("crash-mid", lease_seconds=30.0)
    calls = 0
    never = asyncio.Event()

    @app.handler("ORDER_PLACED", topic="orders")
    async def placed(event: OrderPlaced) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await never.wait()  # the worker dies here

    async with app.testing(partitions=1) as bus:
        envelope = await bus.publish("orders", "ORDER_PLACED", OrderPlaced(order_id="o", total=1))
        await bus.run_until(lambda: calls == 1)
        key = key_of(app, "ORDER_PLACED", envelope.event_id)
        [held] = await bus.store.claim([ClaimRequest(key)], 1.0)
        assert held.status is ClaimStatus.BUSY  # precondition: a live lease at the crash
        await bus.crash()
        await bus.run_until_idle()
        assert calls == 2
        assert bus.outcomes[Outcome.DEFERRED] >= 1
        assert bus.outcomes[Outcome.HANDLED] == 1
        assert Outcome.DUPLICATE not in bus.outcomes
        [done] = await bus.store.claim([ClaimRequest(key)], 1.0)
        assert done.status is ClaimStatus.DUPLICATE
        assert done.attempts == 2


async def test_store_outage_defers_without_running_or_spending_attempts() -> None:
    """Fail-closed: while the store is down the handler never runs and no attempt is spent."""
    app = EventApp("store-down", retry=RetryPolicy(max_attempts=2))
    attempts: list[int] = []

    @app.handler("ORDER_PLACED", topic="orders")
    async def placed(event: OrderPlaced, ctx: EventContext) -> None:
        attempts.append(ctx.attempt)

    async with app.testing(partitions=1) as bus:
        bus.store.set_unavailable(True)
        await bus.publish("orders", "ORDER_PLACED", OrderPlaced(order_id="o", total=1))
        await bus.run_until(lambda: bus.outcomes[Outcome.DEFERRED] >= 3)
        assert attempts == []
        assert bus.app.worker.running
        assert bus.consumer.paused() == {TopicPartition("orders", 0)}
        bus.store.set_unavailable(False)
        await bus.run_until_idle()
        assert attempts == [1]
        assert bus.outcomes[Outcome.HANDLED] == 1
        assert bus.dead_letters() == []


async def test_attempts_are_counted_in_the_store_per_handler_start() -> None:
    """Each retry attempt is one handler start recorded in the store."""
    app = EventApp("attempts", retry=RetryPolicy(max_attempts=3, base_delay=0.1))

    @app.handler("ORDER_PLACED", topic="orders")
    async def placed(event: OrderPlaced, ctx: EventContext) -> None:
        if ctx.attempt < 3:
            raise RuntimeError("again")

    async with app.testing() as bus:
        envelope = await bus.publish("orders", "ORDER_PLACED", OrderPlaced(order_id="o", total=1))
        await bus.run_until_idle()
        [done] = await bus.store.claim(
            [ClaimRequest(key_of(app, "ORDER_PLACED", envelope.event_id))], 1.0
        )
    assert done.status is ClaimStatus.DUPLICATE
    assert done.outcome is Outcome.HANDLED
    assert done.attempts == 3


async def test_a_dead_lettered_event_is_done_and_a_replay_runs_it_once() -> None:
    """DONE dead_lettered stops redeliveries; a replay id runs it again once, never twice."""
    app = EventApp("replay", retry=RetryPolicy(max_attempts=1))
    fail = True
    handled: list[str] = []

    @app.handler("ORDER_PLACED", topic="orders")
    async def placed(event: OrderPlaced) -> None:
        if fail:
            raise ValueError("not yet")
        handled.append(event.order_id)

    async with app.testing(partitions=1) as bus:
        envelope = await bus.publish("orders", "ORDER_PLACED", OrderPlaced(order_id="o", total=1))
        await bus.run_until_idle()
        [letter] = bus.dead_letters("orders")
        await bus.publish("orders", "ORDER_PLACED", envelope)  # a plain redelivery
        await bus.run_until_idle()
        assert bus.outcomes[Outcome.DUPLICATE] == 1
        fail = False
        original = [(name, value) for name, value in letter.headers if not name.startswith("dlq_")]
        for _ in range(2):  # the same replay twice
            await bus.publish_raw(
                "orders", letter.value, key=letter.key, headers=[*original, ("replay_id", b"r1")]
            )
        await bus.run_until_idle()
        assert handled == ["o"]
        assert bus.outcomes[Outcome.DUPLICATE] == 2


async def test_a_duplicate_with_other_content_is_counted_as_a_key_conflict() -> None:
    """Same event id and type, different data: a DUPLICATE, and the conflict is counted."""
    app = EventApp("conflict")

    @app.handler("ORDER_PLACED", topic="orders")
    async def placed(event: OrderPlaced) -> None:
        pass

    async with app.testing(partitions=1) as bus:
        first = await bus.publish("orders", "ORDER_PLACED", OrderPlaced(order_id="o", total=1))
        changed = first.__class__(
            event_type=first.event_type,
            data=OrderPlaced(order_id="o", total=2),
            event_id=first.event_id,
            source_service=first.source_service,
        )
        await bus.publish("orders", "ORDER_PLACED", changed)
        await bus.run_until_idle()
        guard = bus.app.dispatcher.guard
        assert guard is not None
        assert bus.outcomes == {Outcome.HANDLED: 1, Outcome.DUPLICATE: 1}
        assert guard.counts.key_conflict == 1


async def test_idempotency_without_a_store_is_a_start_up_error() -> None:
    """An idempotent app started without a store fails at start-up, naming the fix."""
    app = EventApp("no-store")

    @app.handler("A", topic="t")
    async def handle(event: dict[str, Any]) -> None:
        pass

    broker = MemoryBroker()
    with pytest.raises(ConfigurationError, match="idempotency"):
        await app.start(consumer=broker.consumer("g"), publisher=broker.publisher(), store=None)


async def test_the_bus_uses_the_store_it_is_given() -> None:
    """A store passed to ``testing`` is the one the app uses, even while it is empty."""
    app = EventApp("given-store")

    @app.handler("A", topic="t")
    async def handle(event: dict[str, Any]) -> None:
        pass

    store = InMemoryIdempotencyStore(FakeClock())
    async with app.testing(store=store) as bus:
        assert bus.store is store


async def test_a_long_back_off_keeps_the_lease_and_counts_attempts_once() -> None:
    """Back-offs longer than the lease renew it first: attempts run 1, 2, 3, 4, then DLQ."""
    policy = RetryPolicy(max_attempts=4, base_delay=10.0, max_delay=60.0)
    app = EventApp("long-back-off", retry=policy, lease_seconds=30.0)
    attempts: list[int] = []

    @app.handler("ORDER_PLACED", topic="orders")
    async def failing(event: OrderPlaced, ctx: EventContext) -> None:
        attempts.append(ctx.attempt)
        raise RuntimeError("still failing")

    for seed in range(5):
        attempts.clear()
        async with app.testing(seed=seed) as bus:
            await bus.publish("orders", "ORDER_PLACED", OrderPlaced(order_id="o", total=1))
            await bus.run_until_idle()
            [letter] = bus.dead_letters("orders")
            assert dict(letter.headers)["dlq_attempts"] == b"4"
            assert bus.outcomes == {Outcome.DEAD_LETTERED: 1}
        assert attempts == [1, 2, 3, 4]


async def test_a_dlq_outage_sends_the_dead_letter_later_without_running_the_handler() -> None:
    """The verdict is kept: once the DLQ is back only the dead letter is sent."""
    app = EventApp("dlq-later")
    calls = 0

    @app.handler("ORDER_PLACED", topic="orders")
    async def refuse(event: OrderPlaced) -> None:
        nonlocal calls
        calls += 1
        raise NonRetryableError("cancelled order")

    async with app.testing(partitions=1) as bus:
        bus.broker.fail_publishes("orders.dlq", ConnectionError("down"))
        await bus.publish("orders", "ORDER_PLACED", OrderPlaced(order_id="o", total=1))
        await bus.run_until(lambda: bus.outcomes[Outcome.DEFERRED] >= 3)
        bus.broker.fail_publishes("orders.dlq", None)
        await bus.run_until_idle()
        [letter] = bus.dead_letters("orders")
        assert calls == 1
        assert dict(letter.headers)["dlq_attempts"] == b"1"
        assert bus.outcomes[Outcome.DEAD_LETTERED] == 1


async def test_a_done_mark_that_fails_is_written_later_without_running_the_handler() -> None:
    """Redis down right after the handler: the queued DONE mark waits, retried with back-off,
    the record stays unfinished and uncommitted, and the handler does not run again."""
    app = EventApp("done-later")
    calls = 0

    @app.handler("ORDER_PLACED", topic="orders")
    async def placed(event: OrderPlaced) -> None:
        nonlocal calls
        calls += 1
        bus.store.set_unavailable(True)  # the store goes away as the handler returns

    async with app.testing(partitions=1) as bus:
        envelope = await bus.publish("orders", "ORDER_PLACED", OrderPlaced(order_id="o", total=1))
        down_since = bus.clock.monotonic()
        # ten seconds of outage (a third of the lease): several back-off rounds fail meanwhile
        await bus.run_until(lambda: calls == 1 and bus.clock.monotonic() > down_since + 10)
        assert bus.app.worker.unfinished() == 1
        assert bus.committed("orders", 0) in (None, 0)
        bus.store.set_unavailable(False)
        await bus.run_until_idle()
        assert calls == 1
        assert bus.outcomes[Outcome.HANDLED] == 1
        await bus.publish("orders", "ORDER_PLACED", envelope)
        await bus.run_until_idle()
        assert calls == 1
        assert bus.outcomes[Outcome.DUPLICATE] == 1


async def test_a_handler_slower_than_the_lease_keeps_it_and_runs_once() -> None:
    """The lease is renewed while the handler runs: others stay BUSY, DONE is recorded."""
    app = EventApp("slow-handler", lease_seconds=30.0)
    calls = 0
    holder: list[Any] = []
    checked: list[ClaimStatus] = []

    @app.handler("ORDER_PLACED", topic="orders")
    async def placed(event: OrderPlaced, ctx: EventContext) -> None:
        nonlocal calls
        calls += 1
        bus = holder[0]
        await bus.clock.sleep(100.0)  # more than three leases
        [seen] = await bus.store.claim([ClaimRequest(key_of(app, "ORDER_PLACED", ctx.event_id))], 1)
        checked.append(seen.status)

    async with app.testing(partitions=1) as bus:
        holder.append(bus)
        envelope = await bus.publish("orders", "ORDER_PLACED", OrderPlaced(order_id="o", total=1))
        await bus.publish("orders", "ORDER_PLACED", envelope)
        await bus.run_until_idle()
        guard = bus.app.dispatcher.guard
        assert guard is not None
        assert calls == 1
        assert checked == [ClaimStatus.BUSY]  # still ours after 100 s of a 30 s lease
        assert guard.counts.lease_lost == 0
        assert bus.outcomes == {Outcome.HANDLED: 1, Outcome.DUPLICATE: 1}


async def test_an_earlier_delivery_takes_its_key_from_an_own_claim_not_started_yet() -> None:
    """Lane 0 claimed an event ahead and is busy; lane 1 reaches the same event first: it
    takes the claim over (never waiting on a delivery queued behind) and runs it once; lane
    0's copy is then a duplicate, without any BUSY deferral."""
    app = EventApp("own-lease", lease_seconds=30.0)
    first_started = asyncio.Event()
    event_handled = asyncio.Event()
    runs: list[str] = []

    @app.handler("ORDER_PLACED", topic="orders")
    async def placed(event: OrderPlaced) -> None:
        runs.append(event.order_id)
        if event.order_id == "first":
            first_started.set()
            await event_handled.wait()  # lane 0 holds its claim on "shared", not started
        else:
            event_handled.set()

    @app.handler("ORDER_NOTED", topic="orders", idempotent=False)
    async def noted(event: OrderPlaced) -> None:
        await first_started.wait()  # lane 1 claims "shared" only once lane 0 holds it

    async with app.testing(partitions=2) as bus:
        lane0, lane1 = partition_keys(2)
        await bus.publish(
            "orders", "ORDER_PLACED", OrderPlaced(order_id="first", total=1), key=lane0
        )
        shared = await bus.publish(
            "orders", "ORDER_PLACED", OrderPlaced(order_id="shared", total=1), key=lane0
        )
        await bus.publish("orders", "ORDER_NOTED", OrderPlaced(order_id="note", total=1), key=lane1)
        await bus.publish("orders", "ORDER_PLACED", shared, key=lane1)
        assert [r.partition for r in bus.published("orders")] == [0, 0, 1, 1]
        await bus.run_until_idle()
        guard = bus.app.dispatcher.guard
        assert guard is not None
        assert runs == ["first", "shared"]
        assert guard.counts.busy == 0
        assert bus.outcomes == {Outcome.HANDLED: 3, Outcome.DUPLICATE: 1}


async def test_a_lease_lost_while_the_handler_runs_is_counted_and_not_marked_done() -> None:
    """Renewals fail while the handler outlives its lease: the effect happened, the DONE
    mark is refused and the loss counted; the key is free for a later delivery."""
    app = EventApp("lost-lease", lease_seconds=30.0)
    holder: list[Any] = []

    @app.handler("ORDER_PLACED", topic="orders")
    async def placed(event: OrderPlaced) -> None:
        bus = holder[0]
        bus.store.set_unavailable(True)
        await bus.clock.sleep(100.0)  # every renewal fails: the lease runs out
        bus.store.set_unavailable(False)

    async with app.testing(partitions=1) as bus:
        holder.append(bus)
        envelope = await bus.publish("orders", "ORDER_PLACED", OrderPlaced(order_id="o", total=1))
        await bus.run_until_idle()
        guard = bus.app.dispatcher.guard
        assert guard is not None
        assert guard.counts.lease_lost == 1
        assert bus.outcomes == {Outcome.HANDLED: 1}
        key = key_of(app, "ORDER_PLACED", envelope.event_id)
        [claim] = await bus.store.claim([ClaimRequest(key)], 1)
        assert claim.status is ClaimStatus.CLAIMED  # not done: no mark was written


def partition_keys(partitions: int) -> list[str]:
    """One record key per partition, in partition order."""
    keys: dict[int, str] = {}
    candidate = 0
    while len(keys) < partitions:
        keys.setdefault(default_partition(f"k{candidate}".encode(), partitions), f"k{candidate}")
        candidate += 1
    return [keys[partition] for partition in range(partitions)]


async def test_the_lease_is_kept_while_a_record_out_of_attempts_is_dead_lettered() -> None:
    """A record whose attempts earlier deliveries spent is dead-lettered without running; a
    dead letter that takes longer than a lease still ends DONE: the lease is renewed while
    it is sent, so nothing is lost and the key is not left to run again."""
    app = EventApp("slow-dlq", lease_seconds=30.0, retry=RetryPolicy(max_attempts=2))
    calls = 0

    @app.handler("ORDER_PLACED", topic="orders")
    async def placed(event: OrderPlaced) -> None:
        nonlocal calls
        calls += 1

    async with app.testing(partitions=1) as bus:
        envelope = await bus.publish("orders", "ORDER_PLACED", OrderPlaced(order_id="o", total=1))
        key = key_of(app, "ORDER_PLACED", envelope.event_id)
        for _ in range(2):  # two deliveries started the handler and died with their lease
            [claim] = await bus.store.claim([ClaimRequest(key)], 1.0)
            assert claim.token is not None
            await bus.store.start(key, claim.token)
            bus.clock.advance(2.0)
        gate = asyncio.Event()
        bus.broker.hold_publishes("orders.dlq", gate)
        held_back: list[int] = []

        async def open_after_three_leases() -> None:
            await bus.clock.sleep(100.0)
            held_back.append(len(bus.dead_letters("orders")))
            gate.set()

        opener = asyncio.create_task(open_after_three_leases())
        await bus.run_until_idle()
        await opener
        guard = bus.app.dispatcher.guard
        assert guard is not None
        assert held_back == [0]  # the dead letter really took over three leases
        assert calls == 0
        assert len(bus.dead_letters("orders")) == 1
        assert guard.counts.lease_lost == 0
        [after] = await bus.store.claim([ClaimRequest(key)], 1.0)
        assert after.status is ClaimStatus.DUPLICATE
        assert after.outcome is Outcome.DEAD_LETTERED
