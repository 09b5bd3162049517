"""Fail-open per handler: while the idempotency store is unreachable, a handler that opted in
runs without its protection; every other handler waits, fail-closed (R4)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from eventkit import ConfigurationError, EventApp, EventContext, Outcome, RetryPolicy
from eventkit.keys import event_key, namespace_for
from eventkit.ports import ClaimRequest, ClaimStatus
from tests.unit.bus.models import OrderPlaced

if TYPE_CHECKING:
    from eventkit.middleware.idempotency import IdempotencyCounts
    from eventkit.testing import TestBus

ORDER = OrderPlaced(order_id="o", total=1)


def guard_counts(app: EventApp) -> IdempotencyCounts:
    guard = app.dispatcher.guard
    assert guard is not None
    return guard.counts


async def test_a_fail_open_handler_runs_once_while_the_store_is_down_a_closed_one_waits() -> None:
    """With the store unreachable, the fail-open handler runs once (no claim, no DONE, the
    bypass counted) while the fail-closed handler of another topic runs nothing until the
    store is back, and then once."""
    app = EventApp("fail-open")
    runs: dict[str, list[int]] = {"open": [], "closed": []}

    @app.handler("ORDER_PLACED", topic="orders", fail_open=True)
    async def open_(event: OrderPlaced, ctx: EventContext) -> None:
        runs["open"].append(ctx.attempt)

    @app.handler("ORDER_PLACED", topic="audit")
    async def closed(event: OrderPlaced, ctx: EventContext) -> None:
        runs["closed"].append(ctx.attempt)

    async with app.testing(partitions=1) as bus:
        bus.store.set_unavailable(True)
        envelope = await bus.publish("orders", "ORDER_PLACED", ORDER)
        await bus.publish("audit", "ORDER_PLACED", ORDER)
        await bus.run_until(lambda: bus.outcomes[Outcome.HANDLED] >= 1)
        await bus.run_until(lambda: bus.outcomes[Outcome.DEFERRED] >= 2)
        assert runs == {"open": [1], "closed": []}
        assert guard_counts(app).bypassed == 1
        bus.store.set_unavailable(False)
        await bus.run_until_idle()
        assert runs == {"open": [1], "closed": [1]}
        key = event_key(namespace_for(app.service, app.group_id), "ORDER_PLACED", envelope.event_id)
        [claim] = await bus.store.claim([ClaimRequest(key)], 1.0)
        assert claim.status is ClaimStatus.CLAIMED, "no DONE was written while bypassing"


async def test_a_failing_fail_open_handler_is_retried_by_its_policy_while_the_store_is_down() -> (
    None
):
    """Fail-open wraps only the store calls: a handler failure is retried and dead-lettered
    by the retry policy as usual, and the handler is never called again because of the
    store."""
    app = EventApp("fail-open-retry", retry=RetryPolicy(max_attempts=2, base_delay=0.01))
    attempts: list[int] = []

    @app.handler("ORDER_PLACED", topic="orders", fail_open=True)
    async def placed(event: OrderPlaced, ctx: EventContext) -> None:
        attempts.append(ctx.attempt)
        raise RuntimeError("the handler's own failure")

    async with app.testing(partitions=1) as bus:
        bus.store.set_unavailable(True)
        await bus.publish("orders", "ORDER_PLACED", ORDER)
        await bus.run_until_idle()
        assert attempts == [1, 2]
        assert bus.outcomes[Outcome.DEAD_LETTERED] == 1
        assert len(bus.dead_letters()) == 1


async def test_a_store_lost_at_done_finishes_a_fail_open_record_without_running_it_again() -> None:
    """The store goes away as the handler returns: a fail-open record finishes (HANDLED, the
    missing DONE counted as bypassed) instead of waiting, and its handler ran once."""
    app = EventApp("fail-open-done")
    calls: list[int] = []
    buses: list[TestBus] = []

    @app.handler("ORDER_PLACED", topic="orders", fail_open=True)
    async def placed(event: OrderPlaced) -> None:
        calls.append(1)
        buses[0].store.set_unavailable(True)

    async with app.testing(partitions=1) as bus:
        buses.append(bus)
        await bus.publish("orders", "ORDER_PLACED", ORDER)
        await bus.run_until_idle()
        assert calls == [1]
        assert bus.outcomes[Outcome.HANDLED] == 1
        assert bus.outcomes[Outcome.DEFERRED] == 0
        assert guard_counts(app).bypassed == 1
        assert bus.committed("orders", 0) == 1


@pytest.mark.parametrize("atomic", [False, True])
def test_fail_open_without_idempotency_or_with_atomic_effects_is_refused(atomic: bool) -> None:
    """fail_open only changes how idempotency fails; staged writes cannot fail open."""
    app = EventApp("fail-open-refused")
    with pytest.raises(ConfigurationError, match="fail_open"):
        app.handler(
            "ORDER_PLACED",
            topic="orders",
            fail_open=True,
            idempotent=atomic,
            atomic_effects=atomic,
        )


async def test_a_fail_open_retry_goes_on_when_the_store_fails_during_its_back_off() -> None:
    """The store goes away as a fail-open handler's first attempt fails: keeping the lease
    over the back-off fails open too, so the retry runs at once instead of the record
    waiting, deferred, for the store."""
    app = EventApp("fail-open-back-off", retry=RetryPolicy(max_attempts=3, base_delay=0.01))
    attempts: list[int] = []
    buses: list[TestBus] = []

    @app.handler("ORDER_PLACED", topic="orders", fail_open=True)
    async def placed(event: OrderPlaced, ctx: EventContext) -> None:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            buses[0].store.set_unavailable(True)
            raise RuntimeError("the first attempt fails as the store goes away")

    async with app.testing(partitions=1) as bus:
        buses.append(bus)
        await bus.publish("orders", "ORDER_PLACED", ORDER)
        await bus.run_until(lambda: bus.outcomes[Outcome.HANDLED] >= 1)
        assert attempts == [1, 2]
        assert bus.outcomes[Outcome.DEFERRED] == 0
        assert guard_counts(app).bypassed >= 1


async def test_a_fail_open_delivery_waiting_for_its_own_worker_runs_when_the_store_goes_away() -> (
    None
):
    """The same event on two partitions: the second delivery waits for this worker's own
    running one; the store goes away meanwhile, so asking for the key again fails open (the
    second runs, unprotected) instead of deferring a fail-open handler."""
    app = EventApp("fail-open-own-lease")
    calls: list[int] = []
    proceed = asyncio.Event()

    @app.handler("ORDER_PLACED", topic="orders", fail_open=True)
    async def placed(event: OrderPlaced, ctx: EventContext) -> None:
        calls.append(ctx.attempt)
        if len(calls) == 1:
            await proceed.wait()

    async with app.testing(partitions=2) as bus:
        envelope = await bus.publish("orders", "ORDER_PLACED", ORDER)
        await bus.publish("orders", "ORDER_PLACED", envelope, key="other-key")
        assert {record.partition for record in bus.published("orders")} == {0, 1}
        # both lanes asked for the key: the second was told BUSY by the first's lease
        await bus.run_until(lambda: guard_counts(app).claim_calls >= 2 and calls == [1])
        bus.store.set_unavailable(True)
        proceed.set()
        await bus.run_until(lambda: bus.outcomes[Outcome.HANDLED] >= 2)
        assert calls == [1, 1]
        assert bus.outcomes[Outcome.DEFERRED] == 0
        # the first one's DONE and the second one's claim went without the store
        assert guard_counts(app).bypassed == 2
