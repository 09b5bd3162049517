"""Edge cases of the record path: stale claims, middlewares, stray cancellations, crash loops,
observers and cancelled stops must never wedge a partition or kill the worker."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import TYPE_CHECKING

import pytest

from eventkit import EventApp, EventContext, EventEnvelope, Outcome, RetryPolicy
from eventkit.keys import event_key, namespace_for
from eventkit.ports import ClaimRequest, ClaimStatus
from tests.unit.bus.models import OrderPlaced, RegionalOrder

if TYPE_CHECKING:
    from eventkit.delivery import Delivery
    from eventkit.pipeline import Next
    from eventkit.testing import TestBus


def key_of(app: EventApp, event_id: str) -> str:
    return event_key(namespace_for(app.service, app.group_id), "ORDER_PLACED", event_id)


async def test_a_stale_busy_answer_never_makes_a_lane_wait_on_itself() -> None:
    """Duplicates behind a key another worker held: the earliest delivery gets the key."""
    app = EventApp("stale-busy", lease_seconds=30.0)
    calls: list[str] = []
    holder: list[TestBus] = []

    @app.handler("ORDER_PLACED", topic="orders")
    async def placed(event: OrderPlaced) -> None:
        calls.append(event.order_id)
        if event.order_id == "x":
            await holder[0].clock.sleep(10)  # outlasts the other worker's lease on k

    async with app.testing(partitions=1) as bus:
        holder.append(bus)
        [foreign] = await bus.store.claim([ClaimRequest(key_of(app, "evt-k"))], 5.0)
        assert foreign.status is ClaimStatus.CLAIMED  # another worker holds k for 5 s
        x = await bus.publish("orders", "ORDER_PLACED", OrderPlaced(order_id="x", total=1))
        await bus.publish("orders", "ORDER_PLACED", x)
        k = EventEnvelope(
            event_type="ORDER_PLACED",
            data=OrderPlaced(order_id="k", total=1),
            source_service="producer",
            event_id="evt-k",
        )
        await bus.publish("orders", "ORDER_PLACED", k)
        await bus.publish("orders", "ORDER_PLACED", k)
        await bus.run_until_idle(within=5)
        assert calls == ["x", "k"]
        assert bus.outcomes[Outcome.HANDLED] == 2
        assert bus.outcomes[Outcome.DUPLICATE] == 2
        assert bus.committed("orders", 0) == 4


@pytest.mark.parametrize("fails", [False, True], ids=["skips", "raises"])
async def test_a_claim_made_ahead_is_released_when_a_middleware_finishes_the_record(
    fails: bool,
) -> None:
    """A record a user middleware skips (or fails) gives its claim back; a redelivery runs."""
    app = EventApp("middleware-skip")
    calls: list[str] = []

    def drop_test_traffic(next_: Next) -> Next:
        async def run(delivery: Delivery) -> Outcome:
            if dict(delivery.record.headers).get("x-test") == b"1":
                if fails:
                    raise RuntimeError("test traffic is refused")
                return Outcome.SKIPPED
            return await next_(delivery)

        return run

    app.middleware(drop_test_traffic)

    @app.handler("ORDER_PLACED", topic="orders")
    async def placed(event: OrderPlaced) -> None:
        calls.append(event.order_id)

    async with app.testing(partitions=1) as bus:
        await bus.publish("orders", "ORDER_PLACED", OrderPlaced(order_id="a", total=1))
        marked = await bus.publish(
            "orders", "ORDER_PLACED", OrderPlaced(order_id="b", total=1), headers=[("x-test", b"1")]
        )
        await bus.run_until_idle()
        await bus.publish("orders", "ORDER_PLACED", marked)  # the same event, without the mark
        await bus.run_until_idle(within=5)
        assert calls == ["a", "b"]
        assert bus.committed("orders", 0) == 3


async def test_a_bad_record_queued_behind_never_takes_the_good_one_down() -> None:
    """A payload validator raising anything in a later record fails that record alone, as
    invalid payload; the record before it is handled."""

    app = EventApp("neighbour")
    calls: list[str] = []

    @app.handler("ORDER", topic="orders")
    async def handle(event: RegionalOrder) -> None:
        calls.append(event.order_id)

    async with app.testing(partitions=1) as bus:
        await bus.publish("orders", "ORDER", {"order_id": "good"})
        await bus.publish("orders", "ORDER", {"order_id": "bad", "meta": {"x": 1}})
        await bus.run_until_idle()
        [letter] = bus.dead_letters("orders")
    headers = dict(letter.headers)
    assert calls == ["good"]
    assert headers["dlq_original_offset"] == b"1"
    assert headers["dlq_reason"] == b"invalid_payload"


async def test_a_handler_raising_cancelled_error_is_a_failed_attempt_not_a_dead_lane() -> None:
    """A stray CancelledError from a handler is retried and dead-lettered like any failure."""
    app = EventApp("stray-cancel", retry=RetryPolicy(max_attempts=2, base_delay=0.1))
    calls: list[str] = []

    @app.handler("ORDER_PLACED", topic="orders")
    async def placed(event: OrderPlaced) -> None:
        calls.append(event.order_id)
        if event.order_id == "a":
            cancelled = asyncio.get_running_loop().create_future()
            cancelled.cancel()
            await cancelled

    async with app.testing(partitions=1) as bus:
        for order_id in "abc":
            await bus.publish("orders", "ORDER_PLACED", OrderPlaced(order_id=order_id, total=1))
        await bus.run_until_idle(within=5)
        [letter] = bus.dead_letters("orders")
        assert calls == ["a", "a", "b", "c"]
        assert dict(letter.headers)["dlq_exception_class"] == (
            b"eventkit.errors.HandlerCancelledError"
        )
        assert bus.app.worker.running
        assert bus.committed("orders", 0) == 3


async def test_a_handler_that_crashes_the_worker_ends_in_the_dlq_instead_of_a_loop() -> None:
    """Handler starts are counted across deliveries: after max_attempts the record is
    dead-lettered as attempts_exhausted without running again."""
    app = EventApp("crash-loop", retry=RetryPolicy(max_attempts=3), lease_seconds=5.0)
    attempts: list[int] = []
    started = asyncio.Event()
    never = asyncio.Event()

    @app.handler("ORDER_PLACED", topic="orders")
    async def placed(event: OrderPlaced, ctx: EventContext) -> None:
        attempts.append(ctx.attempt)
        started.set()
        await never.wait()  # the process dies in here

    async with app.testing(partitions=1) as bus:
        await bus.publish("orders", "ORDER_PLACED", OrderPlaced(order_id="o", total=1))
        for _ in range(3):
            started.clear()
            await bus.run_until(started.is_set)
            await bus.crash()
        await bus.run_until_idle()
        [letter] = bus.dead_letters("orders")
        assert attempts == [1, 2, 3]
        assert dict(letter.headers)["dlq_reason"] == b"attempts_exhausted"
        assert bus.committed("orders", 0) == 1


async def test_an_observer_that_raises_never_stops_the_worker() -> None:
    """An observer's exception is logged; records keep flowing."""

    class Broken:
        def record_finished(self, delivery: Delivery, outcome: Outcome, seconds: float) -> None:
            raise AttributeError("observer bug")

    app = EventApp("observer", idempotency=False)
    calls: list[str] = []

    @app.handler("ORDER_PLACED", topic="orders")
    async def placed(event: OrderPlaced) -> None:
        calls.append(event.order_id)

    async with app.testing(partitions=1, observers=[Broken()]) as bus:
        await bus.publish_raw("orders", b"not json")
        await bus.publish("orders", "ORDER_PLACED", OrderPlaced(order_id="o", total=1))
        await bus.run_until_idle()
        assert calls == ["o"]
        assert bus.app.worker.failure is None


async def test_a_cancelled_stop_leaves_the_app_to_abort() -> None:
    """If stop() is cancelled the app still runs, and abort() then ends it."""
    app = EventApp("cancelled-stop", idempotency=False)
    release = asyncio.Event()

    @app.handler("ORDER_PLACED", topic="orders")
    async def placed(event: OrderPlaced) -> None:
        await release.wait()

    async with app.testing(partitions=1) as bus:
        await bus.publish("orders", "ORDER_PLACED", OrderPlaced(order_id="o", total=1))
        await bus.run_until(bus.app.worker.busy)
        stopping = asyncio.create_task(app.stop())
        await asyncio.sleep(0)
        stopping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopping
        assert app.running
        await app.abort()
        assert not app.running


@pytest.mark.parametrize(
    ("value", "reason"), [(b"{not json", b"undecodable"), (None, b"undecodable")]
)
async def test_a_poison_record_claimed_ahead_keeps_its_own_dead_letter_reason(
    value: bytes | None, reason: bytes
) -> None:
    """A record whose header names an idempotent type but whose body cannot be read is
    looked at early, when the record before it claims a chunk ahead; that look must not
    change what its own turn says of it: it is dead-lettered for what is wrong with it."""
    app = EventApp("poison-ahead")

    @app.handler("ORDER_PLACED", topic="orders")
    async def placed(event: OrderPlaced) -> None:
        del event

    async with app.testing(partitions=1) as bus:
        await bus.publish("orders", "ORDER_PLACED", OrderPlaced(order_id="o", total=1))
        await bus.publish_raw("orders", value, headers=[("event_type", b"ORDER_PLACED")])
        await bus.run_until_idle()
        [letter] = bus.dead_letters("orders")
        assert dict(letter.headers)["dlq_reason"] == reason
        assert bus.outcomes == {Outcome.HANDLED: 1, Outcome.DEAD_LETTERED: 1}


async def test_a_poison_record_dispatched_again_keeps_its_own_dead_letter_reason() -> None:
    """A poison record whose dead letter could not be written at first is dead-lettered
    later with the same reason, not with an error of the second dispatch."""
    app = EventApp("poison-again", idempotency=False)

    @app.handler("ORDER_PLACED", topic="orders")
    async def placed(event: OrderPlaced) -> None:
        del event

    async with app.testing(partitions=1) as bus:
        bus.broker.fail_publishes("orders.dlq", ConnectionError("dlq broker down"))
        await bus.publish_raw("orders", b"{not json", headers=[("event_type", b"ORDER_PLACED")])
        await bus.run_until(lambda: bus.outcomes[Outcome.DEFERRED] >= 1)
        bus.broker.fail_publishes("orders.dlq", None)
        await bus.run_until_idle()
        [letter] = bus.dead_letters("orders")
        assert dict(letter.headers)["dlq_reason"] == b"undecodable"


@pytest.mark.parametrize("idempotency", [False, True])
async def test_a_retried_attempt_runs_with_no_exception_of_the_last_one_in_flight(
    idempotency: bool,
) -> None:
    """The second attempt is not run inside the first one's ``except`` block: the handler
    sees no exception being handled, and the error it raises carries no chained context."""
    app = EventApp("clean-retry", idempotency=idempotency, retry=RetryPolicy(max_attempts=2))
    in_flight: list[BaseException | None] = []

    @app.handler("ORDER_PLACED", topic="orders")
    async def placed(event: OrderPlaced, ctx: EventContext) -> None:
        in_flight.append(sys.exc_info()[1])
        raise ValueError(f"attempt {ctx.attempt}")

    async with app.testing(partitions=1) as bus:
        await bus.publish("orders", "ORDER_PLACED", OrderPlaced(order_id="o", total=1))
        await bus.run_until_idle()
        [letter] = bus.dead_letters("orders")
    assert in_flight == [None, None]
    assert dict(letter.headers)["dlq_reason"] == b"handler_error"
