"""The dispatcher in memory: handlers run once per event, routed by type, committed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from eventkit import EventApp, EventContext, EventEnvelope, Outcome, Router
from tests.unit.bus.models import OrderPlaced, StockReserved

if TYPE_CHECKING:
    from eventkit.delivery import Delivery
    from eventkit.pipeline import Next


async def test_each_event_is_handled_once_and_committed_to_the_end() -> None:
    """Every published event reaches its handler once; commits reach each partition's end."""
    app = EventApp("orders", idempotency=False)
    seen: list[str] = []

    @app.handler("ORDER_PLACED", topic="orders")
    async def placed(event: OrderPlaced) -> None:
        seen.append(event.order_id)

    async with app.testing() as bus:
        for number in range(20):
            await bus.publish("orders", "ORDER_PLACED", OrderPlaced(order_id=f"o{number}", total=1))
        await bus.run_until_idle()
        assert sorted(seen) == sorted(f"o{number}" for number in range(20))
        assert bus.outcomes[Outcome.HANDLED] == 20
        for partition in range(3):
            assert bus.committed("orders", partition) == bus.end_offset("orders", partition)


async def test_events_with_one_key_are_handled_in_publish_order() -> None:
    """Records of one key land in one partition and run in order."""
    app = EventApp("stock", idempotency=False)
    order: list[str] = []

    @app.handler("STOCK_RESERVED", topic="stock")
    async def reserved(event: StockReserved) -> None:
        order.append(event.sku)

    async with app.testing() as bus:
        for number in range(30):
            await bus.publish(
                "stock", "STOCK_RESERVED", StockReserved("o1", f"s{number:02}"), key="o1"
            )
        await bus.run_until_idle()
    assert order == [f"s{number:02}" for number in range(30)]


async def test_handlers_are_routed_by_topic_and_event_type() -> None:
    """Two types on one topic and one type on two topics each reach their own handler."""
    app = EventApp("routing", idempotency=False)
    calls: list[str] = []

    @app.handler("A", topic="t1")
    async def a_on_t1(event: dict[str, Any]) -> None:
        calls.append("a1")

    @app.handler("B", topic="t1")
    async def b_on_t1(event: dict[str, Any]) -> None:
        calls.append("b1")

    @app.handler("A", topic="t2")
    async def a_on_t2(event: dict[str, Any]) -> None:
        calls.append("a2")

    async with app.testing() as bus:
        await bus.publish("t1", "A", {})
        await bus.publish("t1", "B", {})
        await bus.publish("t2", "A", {})
        await bus.run_until_idle()
    assert sorted(calls) == ["a1", "a2", "b1"]


async def test_unknown_event_types_are_skipped_and_counted_without_decoding() -> None:
    """An unregistered type is SKIPPED by its header alone, even with an undecodable body."""
    app = EventApp("skip", idempotency=False)

    @app.handler("KNOWN", topic="t")
    async def known(event: dict[str, Any]) -> None:
        pass

    async with app.testing() as bus:
        await bus.publish_raw("t", b"{not json", headers=[("event_type", b"UNKNOWN")])
        await bus.publish("t", "OTHER", {"x": 1})
        await bus.run_until_idle()
        assert bus.outcomes == {Outcome.SKIPPED: 2}
        assert bus.dead_letters() == []
        assert sum(bus.committed("t", p) or 0 for p in range(3)) == 2


async def test_payload_context_and_envelope_parameters_are_filled() -> None:
    """A handler gets its typed payload, the context, or the whole typed envelope."""
    app = EventApp("params", idempotency=False)
    got: dict[str, Any] = {}

    @app.handler("ORDER_PLACED", topic="orders")
    async def with_context(event: OrderPlaced, ctx: EventContext) -> None:
        got["payload"] = event
        got["ctx"] = (ctx.topic, ctx.attempt, ctx.event_type, ctx.key, ctx.correlation_id)

    @app.handler("STOCK_RESERVED", topic="orders")
    async def with_envelope(envelope: EventEnvelope[StockReserved], *, ctx: EventContext) -> None:
        got["envelope"] = envelope
        got["offset"] = ctx.offset

    async with app.testing() as bus:
        placed = await bus.publish(
            "orders", "ORDER_PLACED", OrderPlaced(order_id="o1", total=9.5), key="o1"
        )
        reserved = await bus.publish("orders", "STOCK_RESERVED", StockReserved("o1", "sku"))
        await bus.run_until_idle()
    assert got["payload"] == OrderPlaced(order_id="o1", total=9.5)
    assert got["ctx"] == ("orders", 1, "ORDER_PLACED", b"o1", placed.correlation_id)
    envelope = got["envelope"]
    assert envelope.data == StockReserved("o1", "sku")
    assert envelope.event_id == reserved.event_id
    assert envelope.source_service == "test-bus"
    assert envelope.event_timestamp == reserved.event_timestamp
    assert isinstance(got["offset"], int)


async def test_publishing_from_a_handler_carries_correlation_and_causation() -> None:
    """``ctx.publish`` keeps the correlation id and names the parent as the cause."""
    app = EventApp("chain", idempotency=False)

    @app.handler("ORDER_PLACED", topic="orders")
    async def placed(event: OrderPlaced, ctx: EventContext) -> None:
        await ctx.publish("stock", "STOCK_RESERVED", StockReserved(event.order_id, "sku-1"))

    async with app.testing() as bus:
        parent = await bus.publish("orders", "ORDER_PLACED", OrderPlaced(order_id="o7", total=3))
        await bus.run_until_idle()
        [child] = bus.published("stock")
    body = msgspec.json.decode(child.value or b"")
    headers = dict(child.headers)
    assert body["correlation_id"] == parent.correlation_id
    assert body["metadata"]["causation_id"] == parent.event_id
    assert body["source_service"] == "chain"
    assert body["data"] == {"order_id": "o7", "sku": "sku-1"}
    assert headers["causation_id"] == parent.event_id.encode()
    assert headers["event_type"] == b"STOCK_RESERVED"
    assert body["event_id"] != parent.event_id


async def test_seed_envelopes_with_null_or_odd_metadata_are_handled() -> None:
    """The seed's envelopes decode: metadata null, or holding numbers and objects."""
    app = EventApp("seed", idempotency=False)
    handled: list[str] = []

    @app.handler("CONTENT_VALIDATION_REQUESTED", topic="content-events")
    async def validate(event: dict[str, Any]) -> None:
        handled.append(event["content_id"])

    base = (
        '{"event_id":"%s","event_type":"CONTENT_VALIDATION_REQUESTED",'
        '"event_timestamp":"2024-05-01T10:00:00.123456+00:00","source_service":"content",'
        '"correlation_id":"c-1","schema_version":1,"metadata":%s,"data":{"content_id":"%s"}}'
    )
    async with app.testing() as bus:
        await bus.publish_raw("content-events", (base % ("e1", "null", "a")).encode())
        await bus.publish_raw(
            "content-events", (base % ("e2", '{"n":1,"o":{"x":[1]}}', "b")).encode()
        )
        await bus.run_until_idle()
    assert sorted(handled) == ["a", "b"]


async def test_routers_are_included_with_their_default_topic() -> None:
    """A router's handlers join the app and listen on the router's topic."""
    router = Router(topic="content-events")
    seen: list[str] = []

    @router.handler("CONTENT_INDEXING_REQUESTED")
    async def index(event: dict[str, Any]) -> None:
        seen.append(event["id"])

    app = EventApp("content", idempotency=False)
    app.include_router(router)
    async with app.testing() as bus:
        await bus.publish("content-events", "CONTENT_INDEXING_REQUESTED", {"id": "c1"})
        await bus.run_until_idle()
    assert seen == ["c1"]


async def test_user_middleware_sees_the_decoded_delivery_and_can_decide() -> None:
    """A user middleware runs after decoding and may finish a record itself."""
    app = EventApp("mw", idempotency=False)
    seen_types: list[str | None] = []
    handled: list[int] = []

    def only_even(next_: Next) -> Next:
        async def run(delivery: Delivery) -> Outcome:
            seen_types.append(delivery.event_type)
            if delivery.payload["n"] % 2:
                return Outcome.SKIPPED
            return await next_(delivery)

        return run

    app.middleware(only_even)

    @app.handler("N", topic="t")
    async def handle(event: dict[str, int]) -> None:
        handled.append(event["n"])

    async with app.testing() as bus:
        for number in range(4):
            await bus.publish("t", "N", {"n": number}, key="k")
        await bus.run_until_idle()
        assert bus.outcomes == {Outcome.HANDLED: 2, Outcome.SKIPPED: 2}
    assert handled == [0, 2]
    assert seen_types == ["N"] * 4


async def test_graceful_restart_redelivers_nothing_already_handled() -> None:
    """Stop drains and commits, so a new worker of the group starts after the handled records."""
    app = EventApp("restart", idempotency=False)
    count = 0

    @app.handler("N", topic="t")
    async def handle(event: dict[str, int]) -> None:
        nonlocal count
        count += 1

    async with app.testing() as bus:
        for number in range(10):
            await bus.publish("t", "N", {"n": number})
        await bus.run_until_idle()
        await bus.restart()
        await bus.run_until_idle()
    assert count == 10
