"""Failures in memory: retries, dead letters, poison input and unavailable dependencies."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from eventkit import (
    DecodeLimits,
    EventApp,
    EventContext,
    NonRetryableError,
    Outcome,
    RetryPolicy,
)
from tests.unit.bus.models import OrderPlaced

DEEP_DATA = (
    b'{"event_id":"e1","event_type":"ORDER_PLACED","event_timestamp":"2024-01-01T00:00:00Z",'
    b'"source_service":"s","correlation_id":"c","data":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
)
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=1.0, max_delay=8.0)


def dlq_headers(record: Any) -> dict[str, bytes]:
    return {name: value for name, value in record.headers if name.startswith("dlq_")}


async def test_a_failing_handler_is_retried_with_back_off_until_it_succeeds() -> None:
    """Two failures then a success: three attempts on one claim, the back-off on the clock."""
    app = EventApp("retry", retry=FAST_RETRY, idempotency=False)
    attempts: list[int] = []

    @app.handler("ORDER_PLACED", topic="orders")
    async def flaky(event: OrderPlaced, ctx: EventContext) -> None:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError("downstream is flaky")

    async with app.testing() as bus:
        await bus.publish("orders", "ORDER_PLACED", OrderPlaced(order_id="o1", total=1))
        before = bus.clock.monotonic()
        await bus.run_until_idle()
        assert attempts == [1, 2, 3]
        assert bus.outcomes == {Outcome.HANDLED: 1}
        assert bus.dead_letters() == []
        # full jitter: each wait lies in [0, ceiling]; the fake clock moved by their sum
        assert 0 <= bus.clock.monotonic() - before <= 1.0 + 2.0


async def test_exhausted_retries_dead_letter_the_original_bytes_with_the_reason() -> None:
    """After max_attempts failures the record goes to <topic>.dlq with its bytes and headers."""
    app = EventApp("exhaust", retry=FAST_RETRY, idempotency=False)
    calls = 0

    @app.handler("ORDER_PLACED", topic="orders")
    async def broken(event: OrderPlaced) -> None:
        nonlocal calls
        calls += 1
        raise ValueError("cannot price order")

    async with app.testing() as bus:
        await bus.publish("orders", "ORDER_PLACED", OrderPlaced(order_id="o1", total=1), key="o1")
        [original] = bus.published("orders")
        await bus.run_until_idle()
        [letter] = bus.dead_letters("orders")
        assert calls == 3
        assert bus.outcomes == {Outcome.DEAD_LETTERED: 1}
        assert letter.topic == "orders.dlq"
        assert letter.value == original.value
        assert letter.key == b"o1"
        headers = dlq_headers(letter)
        assert headers["dlq_original_topic"] == b"orders"
        assert headers["dlq_original_partition"] == str(original.partition).encode()
        assert headers["dlq_original_offset"] == str(original.offset).encode()
        assert headers["dlq_reason"] == b"handler_error"
        assert headers["dlq_exception_class"] == b"builtins.ValueError"
        assert headers["dlq_exception_message"] == b"cannot price order"
        assert headers["dlq_attempts"] == b"3"
        assert headers["dlq_consumer_group"] == b"exhaust-consumer"
        assert headers["dlq_first_failure"]
        assert headers["dlq_last_failure"]
        assert dict(letter.headers)["event_type"] == b"ORDER_PLACED"
        assert bus.committed("orders", original.partition) == original.offset + 1


async def test_non_retryable_errors_and_declared_types_dead_letter_at_once() -> None:
    """NonRetryableError, and types in dead_letter_on, skip the remaining attempts."""
    policy = RetryPolicy(max_attempts=5, dead_letter_on=(KeyError,))
    app = EventApp("fatal", retry=policy, idempotency=False)
    calls: list[str] = []

    @app.handler("A", topic="t")
    async def refuse(event: dict[str, Any]) -> None:
        calls.append("a")
        raise NonRetryableError("order was cancelled")

    @app.handler("B", topic="t")
    async def missing(event: dict[str, Any]) -> None:
        calls.append("b")
        raise KeyError("sku")

    async with app.testing() as bus:
        await bus.publish("t", "A", {})
        await bus.publish("t", "B", {})
        await bus.run_until_idle()
        assert sorted(calls) == ["a", "b"]
        assert bus.outcomes == {Outcome.DEAD_LETTERED: 2}
        assert sorted(dlq_headers(r)["dlq_attempts"] for r in bus.dead_letters()) == [b"1", b"1"]


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (b"\xff\xfe not json", [], b"undecodable"),
        (b'{"event_type": "ORDER_PLACED"}', [], b"invalid_envelope"),
        (b"[" * 100_000 + b"]" * 100_000, [], b"invalid_envelope"),
        (None, [], b"undecodable"),
        (DEEP_DATA, [], b"undecodable"),
        (b"x" * 400_000, [], b"oversized"),
        (b"{}", [("h", b"v")] * 20, b"oversized"),
    ],
    ids=["not-json", "missing-fields", "deep", "tombstone", "deep-data", "oversized", "headers"],
)
async def test_poison_records_are_dead_lettered_and_never_stop_the_partition(
    value: bytes | None, headers: list[tuple[str, bytes]], reason: bytes
) -> None:
    """Bad input goes to the DLQ with its reason; the good record behind it is handled."""
    limits = DecodeLimits(max_record_bytes=300_000, max_header_count=10)
    app = EventApp("poison", limits=limits, idempotency=False)
    handled: list[str] = []

    @app.handler("ORDER_PLACED", topic="orders")
    async def placed(event: OrderPlaced) -> None:
        handled.append(event.order_id)

    async with app.testing(partitions=1) as bus:
        await bus.publish_raw("orders", value, headers=headers)
        await bus.publish("orders", "ORDER_PLACED", OrderPlaced(order_id="good", total=1))
        await bus.run_until_idle()
        [letter] = bus.dead_letters("orders")
        assert dlq_headers(letter)["dlq_reason"] == reason
        assert letter.value == (value or b"")
        assert handled == ["good"]
        assert bus.committed("orders", 0) == 2


async def test_a_payload_of_the_wrong_shape_is_dead_lettered_as_invalid_payload() -> None:
    """The envelope is fine but data does not fit the handler's model: DLQ, no attempts."""
    app = EventApp("shape", idempotency=False)
    calls = 0

    @app.handler("ORDER_PLACED", topic="orders")
    async def placed(event: OrderPlaced) -> None:
        nonlocal calls
        calls += 1

    async with app.testing() as bus:
        await bus.publish("orders", "ORDER_PLACED", {"order_id": "o1", "total": "lots"})
        await bus.run_until_idle()
        [letter] = bus.dead_letters("orders")
    assert calls == 0
    assert dlq_headers(letter)["dlq_reason"] == b"invalid_payload"


async def test_a_type_header_that_contradicts_the_body_is_poison() -> None:
    """Routing by header and handling by body must agree, or the record is dead-lettered."""
    app = EventApp("mismatch", idempotency=False)

    @app.handler("A", topic="t")
    async def handle_a(event: dict[str, Any]) -> None:
        raise AssertionError("must not run")

    async with app.testing() as bus:
        await bus.publish("t", "B", {})
        [record] = bus.published("t")
        headers = [(n, b"A" if n == "event_type" else v) for n, v in record.headers]
        await bus.publish_raw("t", record.value, headers=headers)
        await bus.run_until_idle()
        assert bus.outcomes == {Outcome.SKIPPED: 1, Outcome.DEAD_LETTERED: 1}
        assert dlq_headers(bus.dead_letters()[0])["dlq_reason"] == b"invalid_envelope"


async def test_unknown_types_can_be_dead_lettered_instead_of_skipped() -> None:
    """With unknown_event_types="dead_letter" an unregistered type lands in the DLQ."""
    app = EventApp("strict", unknown_event_types="dead_letter", idempotency=False)

    @app.handler("KNOWN", topic="t")
    async def known(event: dict[str, Any]) -> None:
        pass

    async with app.testing() as bus:
        await bus.publish("t", "STRANGER", {})
        await bus.run_until_idle()
        [letter] = bus.dead_letters("t")
    assert dlq_headers(letter)["dlq_reason"] == b"unroutable"


async def test_a_dlq_that_cannot_be_written_leaves_the_record_unfinished() -> None:
    """No DLQ ack, no skip: the offset stays before the record until the DLQ works again."""
    app = EventApp("dlq-down", retry=RetryPolicy(max_attempts=1), idempotency=False)
    handled: list[int] = []

    @app.handler("N", topic="t")
    async def handle(event: dict[str, int]) -> None:
        if event["n"] == 0:
            raise ValueError("poison for the handler")
        handled.append(event["n"])

    async with app.testing(partitions=1) as bus:
        bus.broker.fail_publishes("t.dlq", ConnectionError("dlq broker down"))
        await bus.publish("t", "N", {"n": 0})
        await bus.publish("t", "N", {"n": 1})
        for _ in range(5):
            bus.clock.advance(60.0)
            await asyncio.sleep(0)
        await bus.app.worker.committer.commit(list(bus.app.worker.owned()))
        assert bus.committed("t", 0) in (None, 0)
        assert handled == []
        assert bus.outcomes[Outcome.DEFERRED] >= 1
        bus.broker.fail_publishes("t.dlq", None)
        await bus.run_until_idle()
        assert len(bus.dead_letters("t")) == 1
        assert handled == [1]
        assert bus.committed("t", 0) == 2


async def test_a_handler_that_times_out_is_retried_then_dead_lettered() -> None:
    """A handler over its timeout fails that attempt; after the last one it is dead-lettered."""
    app = EventApp("slow", retry=RetryPolicy(max_attempts=2, base_delay=0.01), idempotency=False)
    calls = 0

    @app.handler("SLOW", topic="t", timeout=0.01)
    async def slow(event: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        await asyncio.Event().wait()

    async with app.testing() as bus:
        await bus.publish("t", "SLOW", {})
        await bus.run_until_idle()
        [letter] = bus.dead_letters("t")
    assert calls == 2
    assert (
        dlq_headers(letter)["dlq_exception_class"]
        == b"eventkit.middleware.timeout.HandlerTimeoutError"
    )


async def test_cloudevents_from_the_sdk_are_routed_and_handled() -> None:
    """Binary and structured CloudEvents made by the SDK reach the handler of their type."""
    from cloudevents.v1.http import CloudEvent  # noqa: PLC0415 - test-only dependency
    from cloudevents.v1.kafka import to_binary, to_structured  # noqa: PLC0415

    app = EventApp("ce", idempotency=False)
    got: list[tuple[str, str]] = []

    @app.handler("com.example.order.placed", topic="ce")
    async def placed(event: OrderPlaced, ctx: EventContext) -> None:
        got.append((event.order_id, ctx.source_service))

    def make(order_id: str) -> CloudEvent:
        attributes = {
            "type": "com.example.order.placed",
            "source": "/shop",
            "datacontenttype": "application/json",
        }
        return CloudEvent(attributes, {"order_id": order_id, "total": 2.5})

    async with app.testing() as bus:
        binary = to_binary(make("bin"))
        structured = to_structured(make("str"))
        for message in (binary, structured):
            assert isinstance(message.value, bytes)
            await bus.publish_raw("ce", message.value, headers=list(message.headers.items()))
        await bus.run_until_idle()
    assert sorted(got) == [("bin", "/shop"), ("str", "/shop")]
