"""Atomic-effect mode in memory: staged writes land with DONE, once, and only on success."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from eventkit import (
    ConfigurationError,
    EventApp,
    EventContext,
    NonRetryableError,
    Outcome,
    RetryPolicy,
)
from eventkit.context import child_event_id
from eventkit.fakeclock import FakeClock
from eventkit.idempotency import InMemoryIdempotencyStore
from eventkit.idempotency.effects import RedisEffects
from eventkit.keys import event_key, namespace_for
from eventkit.ports import ClaimRequest, ClaimStatus
from tests.unit.bus.models import OrderPlaced

ORDER = OrderPlaced(order_id="o", total=3)


def key_of(app: EventApp, event_id: str) -> str:
    return event_key(namespace_for(app.service, app.group_id), "ORDER_PLACED", event_id)


def counter_app(name: str, **options: Any) -> tuple[EventApp, list[int]]:
    """An app whose atomic handler counts orders and their totals through ``RedisEffects``."""
    app = EventApp(name, retry=RetryPolicy(max_attempts=3, base_delay=0.01), **options)
    runs: list[int] = []

    @app.handler("ORDER_PLACED", topic="orders", atomic_effects=True)
    async def placed(event: OrderPlaced, effects: RedisEffects, ctx: EventContext) -> None:
        runs.append(ctx.attempt)
        effects.incrby("orders:count")
        effects.hincrby("orders:totals", event.order_id, int(event.total))
        effects.sadd("orders:ids", event.order_id)

    return app, runs


async def test_staged_writes_land_with_done_when_the_handler_succeeds() -> None:
    """A handled record's staged writes are applied, and its key is done."""
    app, runs = counter_app("atomic-ok")
    async with app.testing(partitions=1) as bus:
        envelope = await bus.publish("orders", "ORDER_PLACED", ORDER)
        await bus.run_until_idle()
        target = bus.store.effects_target
        assert runs == [1]
        assert target.get("orders:count") == b"1"
        assert target.hgetall("orders:totals") == {b"o": b"3"}
        assert target.smembers("orders:ids") == {b"o"}
        [claim] = await bus.store.claim([ClaimRequest(key_of(app, envelope.event_id))], 1.0)
        assert claim.status is ClaimStatus.DUPLICATE


async def test_the_writes_of_a_failed_attempt_never_land() -> None:
    """Attempt 1 stages writes and raises; only attempt 2's writes are applied."""
    app = EventApp("atomic-retry", retry=RetryPolicy(max_attempts=3, base_delay=0.01))

    @app.handler("ORDER_PLACED", topic="orders", atomic_effects=True)
    async def placed(event: OrderPlaced, effects: RedisEffects, ctx: EventContext) -> None:
        effects.incrby("orders:count", 100 if ctx.attempt == 1 else 1)
        effects.rpush("orders:attempts", ctx.attempt)
        if ctx.attempt == 1:
            raise RuntimeError("flaky")

    async with app.testing(partitions=1) as bus:
        await bus.publish("orders", "ORDER_PLACED", ORDER)
        await bus.run_until_idle()
        assert bus.outcomes == {Outcome.HANDLED: 1}
        assert bus.store.effects_target.get("orders:count") == b"1"
        assert bus.store.effects_target.lrange("orders:attempts") == [b"2"]


async def test_a_dead_lettered_record_applies_none_of_its_writes() -> None:
    """A handler that stages writes and fails for good: DLQ, and nothing written."""
    app = EventApp("atomic-dlq")

    @app.handler("ORDER_PLACED", topic="orders", atomic_effects=True)
    async def placed(event: OrderPlaced, effects: RedisEffects) -> None:
        effects.set("orders:last", event.order_id)
        raise NonRetryableError("bad order")

    async with app.testing(partitions=1) as bus:
        await bus.publish("orders", "ORDER_PLACED", ORDER)
        await bus.run_until_idle()
        assert bus.outcomes == {Outcome.DEAD_LETTERED: 1}
        assert bus.store.effects_target.keys() == set()


async def test_a_crash_after_done_redelivers_a_duplicate_that_writes_nothing_more() -> None:
    """Done (with its writes) but not committed: the redelivery is a DUPLICATE, count 1."""
    app, runs = counter_app("atomic-crash-after-done")
    async with app.testing(partitions=1) as bus:
        await bus.publish("orders", "ORDER_PLACED", ORDER)
        await bus.run_until(lambda: bus.store.effects_target.get("orders:count") == b"1")
        assert bus.committed("orders", 0) is None  # precondition: done, not committed
        await bus.crash()
        await bus.run_until_idle()
        assert runs == [1]
        assert bus.outcomes[Outcome.DUPLICATE] == 1
        assert bus.store.effects_target.get("orders:count") == b"1"


async def test_a_crash_mid_handler_lands_the_writes_of_the_rerun_only() -> None:
    """The crashed attempt's staged writes die with it; the redelivery's land, once."""
    app = EventApp("atomic-crash-mid", lease_seconds=30.0)
    never = asyncio.Event()
    runs = 0

    @app.handler("ORDER_PLACED", topic="orders", atomic_effects=True)
    async def placed(event: OrderPlaced, effects: RedisEffects) -> None:
        nonlocal runs
        runs += 1
        effects.incrby("orders:count")
        if runs == 1:
            await never.wait()  # the worker dies here, its writes staged

    async with app.testing(partitions=1) as bus:
        await bus.publish("orders", "ORDER_PLACED", ORDER)
        await bus.run_until(lambda: runs == 1)
        await bus.crash()
        await bus.run_until_idle()
        assert runs == 2
        assert bus.store.effects_target.get("orders:count") == b"1"


async def test_a_lost_lease_applies_nothing_and_the_record_is_claimed_again() -> None:
    """DONE refused (the lease expired and was taken): no write lands, the record is not
    finished as handled; once the other owner is done it is a duplicate."""
    app = EventApp("atomic-lease-lost", lease_seconds=30.0)
    runs = 0
    holder: list[str] = []

    @app.handler("ORDER_PLACED", topic="orders", atomic_effects=True)
    async def placed(event: OrderPlaced, effects: RedisEffects, ctx: EventContext) -> None:
        nonlocal runs
        runs += 1
        effects.incrby("orders:count")
        if runs == 1:
            # the lease runs out and another worker takes the key over
            bus.clock.advance(31.0)
            key = key_of(app, ctx.event_id)
            [taken] = await bus.store.claim([ClaimRequest(key)], 30.0)
            assert taken.status is ClaimStatus.CLAIMED
            assert taken.token is not None
            holder.extend((key, taken.token))

    async with app.testing(partitions=1) as bus:
        await bus.publish("orders", "ORDER_PLACED", ORDER)
        await bus.run_until(lambda: bool(holder))
        await asyncio.sleep(0)
        guard = app.dispatcher.guard
        assert guard is not None
        await bus.run_until(lambda: guard.counts.lease_lost == 1)
        assert bus.store.effects_target.get("orders:count") is None
        assert Outcome.HANDLED not in bus.outcomes
        # the other owner finishes with its own writes; the record then settles as duplicate
        key, token = holder
        effects = RedisEffects()
        effects.incrby("orders:count")
        assert await bus.store.complete_with_effects(key, token, "", 60.0, effects.seal())
        await bus.run_until_idle()
        assert bus.outcomes[Outcome.DUPLICATE] == 1
        assert bus.store.effects_target.get("orders:count") == b"1"


async def test_writes_the_store_refuses_dead_letter_the_record_and_land_nothing() -> None:
    """A staged INCRBY of a key holding no integer: nothing applied, the record in the DLQ."""
    app = EventApp("atomic-refused")

    @app.handler("ORDER_PLACED", topic="orders", atomic_effects=True)
    async def placed(event: OrderPlaced, effects: RedisEffects) -> None:
        effects.set("orders:first", "kept?")
        effects.incrby("orders:name")

    async with app.testing(partitions=1) as bus:
        seed = RedisEffects()
        seed.set("orders:name", "not a number")
        bus.store.effects_target.apply(seed.seal())
        envelope = await bus.publish("orders", "ORDER_PLACED", ORDER)
        await bus.run_until_idle()
        assert bus.outcomes == {Outcome.DEAD_LETTERED: 1}
        assert bus.store.effects_target.get("orders:first") is None
        [claim] = await bus.store.claim([ClaimRequest(key_of(app, envelope.event_id))], 1.0)
        assert claim.status is ClaimStatus.CLAIMED  # released, never done as handled


# --- deterministic ids of published events ------------------------------------------------------


class Shipped(msgspec.Struct, frozen=True):
    order_id: str


async def test_a_retried_handler_publishes_the_same_event_ids_again() -> None:
    """Ids are a UUIDv5 of the parent's key, the child type and its index in the attempt."""
    app = EventApp("atomic-ids", retry=RetryPolicy(max_attempts=2, base_delay=0.01))

    @app.handler("ORDER_PLACED", topic="orders", atomic_effects=True)
    async def placed(event: OrderPlaced, ctx: EventContext) -> None:
        await ctx.publish("shipping", "SHIPPED", Shipped(event.order_id))
        await ctx.publish("shipping", "SHIPPED", Shipped(event.order_id))
        await ctx.publish("shipping", "BILLED", Shipped(event.order_id))
        if ctx.attempt == 1:
            raise RuntimeError("after publishing")

    async with app.testing(partitions=1) as bus:
        bus.broker.create_topic("shipping")
        parent = await bus.publish("orders", "ORDER_PLACED", ORDER)
        await bus.run_until_idle()
        ids = [
            msgspec.json.decode(record.value or b"")["event_id"]
            for record in bus.published("shipping")
        ]
        key = key_of(app, parent.event_id)
        expected = [
            child_event_id(key, "SHIPPED", 0),
            child_event_id(key, "SHIPPED", 1),
            child_event_id(key, "BILLED", 0),
        ]
        assert ids == expected * 2
        assert len(set(expected)) == 3


async def test_handlers_not_in_atomic_mode_publish_fresh_ids() -> None:
    """Deterministic ids are an atomic-effect feature: other handlers' ids stay random."""
    app = EventApp("plain-ids", retry=RetryPolicy(max_attempts=2, base_delay=0.01))

    @app.handler("ORDER_PLACED", topic="orders")
    async def placed(event: OrderPlaced, ctx: EventContext) -> None:
        await ctx.publish("shipping", "SHIPPED", Shipped(event.order_id))
        if ctx.attempt == 1:
            raise RuntimeError("after publishing")

    async with app.testing(partitions=1) as bus:
        bus.broker.create_topic("shipping")
        await bus.publish("orders", "ORDER_PLACED", ORDER)
        await bus.run_until_idle()
        ids = [
            msgspec.json.decode(record.value or b"")["event_id"]
            for record in bus.published("shipping")
        ]
        assert len(ids) == len(set(ids)) == 2


# --- registration and start-up --------------------------------------------------------------


def test_atomic_effects_with_idempotency_off_is_refused_at_registration() -> None:
    """``atomic_effects=True, idempotent=False`` cannot hold: an error at import time."""
    app = EventApp("bad")
    with pytest.raises(ConfigurationError, match="needs idempotency on"):
        app.handler("ORDER_PLACED", topic="orders", atomic_effects=True, idempotent=False)


def test_a_redis_effects_parameter_needs_atomic_effects() -> None:
    """Only an atomic-effect handler may take ``RedisEffects``."""
    app = EventApp("bad")

    async def placed(event: OrderPlaced, effects: RedisEffects) -> None:
        return None

    with pytest.raises(ConfigurationError, match="atomic_effects=True"):
        app.handler("ORDER_PLACED", topic="orders")(placed)


async def test_atomic_effects_turn_idempotency_on_whatever_the_app_default() -> None:
    """An app with idempotency off still claims and marks done its atomic handler's records."""
    app, runs = counter_app("atomic-default-off", idempotency=False)
    async with app.testing(partitions=1) as bus:
        envelope = await bus.publish("orders", "ORDER_PLACED", ORDER)
        await bus.publish("orders", "ORDER_PLACED", envelope)
        await bus.run_until_idle()
        assert runs == [1]
        assert bus.outcomes == {Outcome.HANDLED: 1, Outcome.DUPLICATE: 1}
        assert bus.store.effects_target.get("orders:count") == b"1"


class NoEffectsStore(InMemoryIdempotencyStore):
    """A store that cannot apply effects atomically, as a Redis Cluster store."""

    supports_effects = False


async def test_a_store_without_effects_support_is_refused_at_start_up() -> None:
    """Atomic handlers on a store that cannot apply effects: ``ConfigurationError`` at start."""
    app, _ = counter_app("atomic-no-support")
    with pytest.raises(ConfigurationError, match="cannot apply them atomically"):
        async with app.testing(store=NoEffectsStore(FakeClock())):
            pass


async def test_a_store_outage_at_done_keeps_the_staged_writes_for_the_later_done() -> None:
    """The store is down when DONE is due: the record is deferred, the handler does not run
    again, and the DONE written after the outage carries the same staged writes."""
    app = EventApp("atomic-outage", retry=RetryPolicy(max_attempts=3, base_delay=0.01))
    runs: list[int] = []
    buses: list[Any] = []

    @app.handler("ORDER_PLACED", topic="orders", atomic_effects=True)
    async def placed(event: OrderPlaced, effects: RedisEffects) -> None:
        runs.append(1)
        effects.incrby("orders:count")
        buses[0].store.set_unavailable(True)  # the outage begins as the handler returns

    async with app.testing(partitions=1) as bus:
        buses.append(bus)
        await bus.publish("orders", "ORDER_PLACED", ORDER)
        await bus.run_until(lambda: bus.outcomes[Outcome.DEFERRED] >= 2)
        assert bus.store.effects_target.get("orders:count") is None, "nothing lands while down"
        bus.store.set_unavailable(False)
        await bus.run_until_idle()
        assert runs == [1]
        assert bus.outcomes[Outcome.HANDLED] == 1
        assert bus.store.effects_target.get("orders:count") == b"1"


@pytest.mark.parametrize(
    ("key", "reason"),
    [("eventkit:other:group:0123", "reserved"), ("bad\ud800key", "UTF-8")],
)
async def test_a_key_in_eventkits_space_or_not_utf8_is_refused_when_staged(
    key: str, reason: str
) -> None:
    """Staging a write to eventkit's reserved key space (where DONE marks live) or to a key
    that cannot be encoded fails in the handler, which is dead-lettered after its attempts;
    nothing is written and the event's claim is not left held."""
    app = EventApp("atomic-keys", retry=RetryPolicy(max_attempts=2, base_delay=0.01))
    errors: list[str] = []

    @app.handler("ORDER_PLACED", topic="orders", atomic_effects=True)
    async def placed(event: OrderPlaced, effects: RedisEffects) -> None:
        try:
            effects.incrby(key)
        except ValueError as exc:
            errors.append(str(exc))
            raise

    async with app.testing(partitions=1) as bus:
        envelope = await bus.publish("orders", "ORDER_PLACED", ORDER)
        await bus.run_until_idle()
        assert len(errors) == 2
        assert reason in errors[0]
        assert bus.outcomes[Outcome.DEAD_LETTERED] == 1
        assert bus.store.effects_target.get(key) is None
        [claim] = await bus.store.claim([ClaimRequest(key_of(app, envelope.event_id))], 1.0)
        assert claim.status is ClaimStatus.DUPLICATE
        assert claim.outcome is Outcome.DEAD_LETTERED


async def test_a_replayed_dead_letter_publishes_children_with_ids_of_its_own() -> None:
    """An event dead-lettered after publishing a child, then replayed (``replay_id`` header)
    once the bug is fixed: the replay's child gets a new id, so downstream does not drop it
    as a duplicate of the failed attempts' child."""
    app = EventApp("atomic-replay", retry=RetryPolicy(max_attempts=1))
    fixed: list[bool] = []

    @app.handler("ORDER_PLACED", topic="orders", atomic_effects=True)
    async def placed(event: OrderPlaced, ctx: EventContext) -> None:
        await ctx.publish("shipping", "SHIPPED", Shipped(event.order_id))
        if not fixed:
            raise RuntimeError("a bug, fixed before the replay")

    async with app.testing(partitions=1) as bus:
        bus.broker.create_topic("shipping")
        envelope = await bus.publish("orders", "ORDER_PLACED", ORDER)
        await bus.run_until_idle()
        assert bus.outcomes[Outcome.DEAD_LETTERED] == 1
        fixed.append(True)
        await bus.publish("orders", "ORDER_PLACED", envelope, headers=[("replay_id", b"r1")])
        await bus.run_until_idle()
        assert bus.outcomes[Outcome.HANDLED] == 1
        ids = [
            msgspec.json.decode(record.value or b"")["event_id"]
            for record in bus.published("shipping")
        ]
        assert len(ids) == 2
        assert ids[0] == child_event_id(key_of(app, envelope.event_id), "SHIPPED", 0)
        assert ids[1] != ids[0], "the replay's child has an id of its own"
