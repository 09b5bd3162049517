"""``DeadLetterPublisher``: original bytes, key and headers plus every ``dlq_*`` header (R5)."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import pytest

from eventkit import (
    Delivery,
    InvalidEnvelopeError,
    InvalidPayloadError,
    NonRetryableError,
    OversizedRecordError,
    PoisonRecordError,
    PublishError,
    UndecodableRecordError,
    UnroutableEventError,
)
from eventkit.deadletters import DeadLetterPublisher
from eventkit.middleware.timeout import HandlerTimeoutError
from eventkit.transports.memory import MemoryBroker, StoredRecord

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from eventkit.transports.memory import MemoryPublisher

GROUP = "orders-svc-consumer"
VALUE = b'{"event_type": "order.created", "data": {"order_id": "o-1"}}'
FIRST_FAILURE = 1_700_000_000.5
LAST_FAILURE = 1_700_000_042.25
ORIGINAL_HEADERS = (("event_type", b"order.created"), ("traceparent", b"00-abc-def-01"))


class PaymentDeclinedError(Exception):
    """A handler failure from the domain."""


@pytest.fixture
def broker() -> MemoryBroker:
    """One partition per topic."""
    return MemoryBroker(default_partitions=1)


@pytest.fixture
async def transport(broker: MemoryBroker) -> AsyncIterator[MemoryPublisher]:
    """A started transport publisher."""
    publisher = broker.publisher()
    await publisher.start()
    yield publisher
    await publisher.stop()


def failed_delivery(
    value: bytes | None = VALUE, *, key: bytes | None = b"order-1", attempt: int = 3
) -> Delivery:
    """A delivery of a record at orders[2]@17 that failed ``attempt`` times."""
    record = StoredRecord(
        topic="orders",
        partition=2,
        offset=17,
        timestamp=1_699_999_999_123,
        key=key,
        value=value,
        headers=ORIGINAL_HEADERS,
    )
    delivery = Delivery(record)
    delivery.attempt = attempt
    delivery.first_failure = FIRST_FAILURE
    delivery.last_failure = LAST_FAILURE
    return delivery


def only_record(broker: MemoryBroker, topic: str) -> StoredRecord:
    """The single record on ``topic``."""
    records = broker.records(topic)
    assert len(records) == 1
    return records[0]


def header(record: StoredRecord, name: str) -> bytes:
    """The one value of header ``name``."""
    values = [value for key, value in record.headers if key == name]
    assert len(values) == 1, f"{name}: {values}"
    return values[0]


async def test_dead_letter_keeps_original_bytes_key_and_headers(
    broker: MemoryBroker, transport: MemoryPublisher
) -> None:
    """The DLQ record on ``<topic>.dlq`` has the same key, value bytes and headers first."""
    dead_letters = DeadLetterPublisher(transport, group_id=GROUP)
    await dead_letters.send(failed_delivery(), PaymentDeclinedError("card declined"))
    record = only_record(broker, "orders.dlq")
    assert record.key == b"order-1"
    assert record.value == VALUE
    assert record.headers[: len(ORIGINAL_HEADERS)] == ORIGINAL_HEADERS


async def test_dead_letter_headers_carry_provenance(
    broker: MemoryBroker, transport: MemoryPublisher
) -> None:
    """Every ``dlq_*`` header is present, in order, with the record's and failure's values."""
    dead_letters = DeadLetterPublisher(transport, group_id=GROUP)
    await dead_letters.send(failed_delivery(), PaymentDeclinedError("card declined"))
    record = only_record(broker, "orders.dlq")
    assert record.headers[len(ORIGINAL_HEADERS) :] == (
        ("dlq_original_topic", b"orders"),
        ("dlq_original_partition", b"2"),
        ("dlq_original_offset", b"17"),
        ("dlq_original_timestamp", b"1699999999123"),
        ("dlq_consumer_group", GROUP.encode()),
        ("dlq_reason", b"handler_error"),
        ("dlq_exception_class", f"{__name__}.PaymentDeclinedError".encode()),
        ("dlq_exception_message", b"card declined"),
        ("dlq_attempts", b"3"),
        ("dlq_first_failure", b"2023-11-14T22:13:20.500000+00:00"),
        ("dlq_last_failure", b"2023-11-14T22:14:02.250000+00:00"),
    )


async def test_custom_topic_for_names_the_dead_letter_topic(
    broker: MemoryBroker, transport: MemoryPublisher
) -> None:
    """A custom ``topic_for`` decides the DLQ topic."""
    dead_letters = DeadLetterPublisher(
        transport, group_id=GROUP, topic_for=lambda topic: f"dead.{topic}"
    )
    assert dead_letters.topic_for("orders") == "dead.orders"
    await dead_letters.send(failed_delivery(), PaymentDeclinedError("declined"))
    assert only_record(broker, "dead.orders").value == VALUE
    assert "orders.dlq" not in broker.topics()


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (UndecodableRecordError("bad json"), b"undecodable"),
        (OversizedRecordError("too big"), b"oversized"),
        (InvalidEnvelopeError("no event_id"), b"invalid_envelope"),
        (InvalidPayloadError("wrong shape"), b"invalid_payload"),
        (UnroutableEventError("no handler"), b"unroutable"),
        (PoisonRecordError("generic"), b"poison"),
        (NonRetryableError("declined"), b"handler_error"),
        (HandlerTimeoutError("slow"), b"handler_error"),
        (ValueError("bug"), b"handler_error"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else value.decode(),
)
async def test_reason_is_poison_kind_or_handler_error(
    broker: MemoryBroker, transport: MemoryPublisher, error: Exception, reason: bytes
) -> None:
    """Poison records carry their class's reason; every other failure is ``handler_error``."""
    await DeadLetterPublisher(transport, group_id=GROUP).send(failed_delivery(), error)
    record = only_record(broker, "orders.dlq")
    assert header(record, "dlq_reason") == reason
    assert header(record, "dlq_exception_class") == (
        f"{type(error).__module__}.{type(error).__qualname__}".encode()
    )


async def test_exception_message_is_capped_at_1024_chars(
    broker: MemoryBroker, transport: MemoryPublisher
) -> None:
    """A long exception message is cut to its first 1024 characters."""
    message = "x" * 1000 + "y" * 5000
    await DeadLetterPublisher(transport, group_id=GROUP).send(
        failed_delivery(), ValueError(message)
    )
    sent = header(only_record(broker, "orders.dlq"), "dlq_exception_message")
    assert sent == message[:1024].encode()


async def test_value_over_limit_is_truncated_with_its_hash_and_size(
    broker: MemoryBroker, transport: MemoryPublisher
) -> None:
    """An oversized value is cut to ``max_value_bytes`` with the whole value's sha256 and size."""
    value = bytes(range(256)) * 8
    dead_letters = DeadLetterPublisher(transport, group_id=GROUP, max_value_bytes=100)
    await dead_letters.send(failed_delivery(value), OversizedRecordError("too big"))
    record = only_record(broker, "orders.dlq")
    assert record.value == value[:100]
    assert header(record, "dlq_value_sha256") == hashlib.sha256(value).hexdigest().encode()
    assert header(record, "dlq_value_bytes") == b"2048"


async def test_value_at_limit_is_kept_whole(
    broker: MemoryBroker, transport: MemoryPublisher
) -> None:
    """A value exactly ``max_value_bytes`` long is sent whole, without hash headers."""
    value = b"v" * 100
    dead_letters = DeadLetterPublisher(transport, group_id=GROUP, max_value_bytes=100)
    await dead_letters.send(failed_delivery(value), ValueError("bug"))
    record = only_record(broker, "orders.dlq")
    assert record.value == value
    names = {name for name, _ in record.headers}
    assert "dlq_value_sha256" not in names
    assert "dlq_value_bytes" not in names


async def test_tombstone_is_sent_as_empty_value(
    broker: MemoryBroker, transport: MemoryPublisher
) -> None:
    """A record without a value (a tombstone) is dead-lettered with ``b""``, key kept."""
    await DeadLetterPublisher(transport, group_id=GROUP).send(
        failed_delivery(None), UndecodableRecordError("record has no value (a tombstone)")
    )
    record = only_record(broker, "orders.dlq")
    assert record.value == b""
    assert record.key == b"order-1"


async def test_keyless_record_stays_keyless(
    broker: MemoryBroker, transport: MemoryPublisher
) -> None:
    """A record without a key is dead-lettered without a key."""
    await DeadLetterPublisher(transport, group_id=GROUP).send(
        failed_delivery(key=None), ValueError("bug")
    )
    assert only_record(broker, "orders.dlq").key is None


async def test_missing_failure_times_are_empty_headers(
    broker: MemoryBroker, transport: MemoryPublisher
) -> None:
    """A poison record that never failed a handler has empty first/last failure headers."""
    delivery = failed_delivery(attempt=0)
    delivery.first_failure = None
    delivery.last_failure = None
    await DeadLetterPublisher(transport, group_id=GROUP).send(
        delivery, UndecodableRecordError("bad json")
    )
    record = only_record(broker, "orders.dlq")
    assert header(record, "dlq_first_failure") == b""
    assert header(record, "dlq_last_failure") == b""
    assert header(record, "dlq_attempts") == b"0"


async def test_failing_dead_letter_publish_raises_publish_error(
    broker: MemoryBroker, transport: MemoryPublisher
) -> None:
    """An unacknowledged DLQ send raises ``PublishError`` and writes nothing."""
    cause = ConnectionError("broker down")
    broker.fail_publishes("orders.dlq", cause)
    with pytest.raises(PublishError) as caught:
        await DeadLetterPublisher(transport, group_id=GROUP).send(
            failed_delivery(), ValueError("bug")
        )
    assert caught.value.__cause__ is cause
    assert "orders.dlq" not in broker.topics()


async def test_dead_letter_send_succeeds_after_fault_clears(
    broker: MemoryBroker, transport: MemoryPublisher
) -> None:
    """A DLQ send that failed once can be sent again once the broker recovers."""
    broker.fail_publishes("orders.dlq", ConnectionError("blip"), times=1)
    dead_letters = DeadLetterPublisher(transport, group_id=GROUP)
    with pytest.raises(PublishError):
        await dead_letters.send(failed_delivery(), ValueError("bug"))
    await dead_letters.send(failed_delivery(), ValueError("bug"))
    assert only_record(broker, "orders.dlq").value == VALUE


def delivery_with_headers(headers: tuple[tuple[str, bytes], ...]) -> Delivery:
    """A failed delivery of orders[2]@17 carrying ``headers``."""
    original = failed_delivery().record
    return Delivery(
        StoredRecord(
            topic=original.topic,
            partition=original.partition,
            offset=original.offset,
            timestamp=original.timestamp,
            key=original.key,
            value=original.value,
            headers=headers,
        )
    )


async def test_dead_lettering_again_replaces_the_earlier_dlq_headers(
    broker: MemoryBroker, transport: MemoryPublisher
) -> None:
    """A replayed dead letter that fails again carries one set of dlq_* headers, the new one."""
    earlier = (("event_type", b"order.created"), ("dlq_reason", b"unroutable"))
    await DeadLetterPublisher(transport, group_id=GROUP).send(
        delivery_with_headers(earlier), PaymentDeclinedError("again")
    )
    record = only_record(broker, "orders.dlq")
    assert header(record, "dlq_reason") == b"handler_error"
    assert header(record, "dlq_exception_message") == b"again"
    assert record.headers[0] == ("event_type", b"order.created")


async def test_oversized_original_headers_are_left_out_of_the_dead_letter(
    broker: MemoryBroker, transport: MemoryPublisher
) -> None:
    """Headers over the bound are dropped (their size recorded), so the DLQ can take it."""
    big = (("big", b"x" * 5000),)
    await DeadLetterPublisher(transport, group_id=GROUP, max_header_bytes=1024).send(
        delivery_with_headers(big), OversizedRecordError("headers too big")
    )
    record = only_record(broker, "orders.dlq")
    assert all(name != "big" for name, _ in record.headers)
    assert header(record, "dlq_dropped_header_bytes") == b"5003"
    assert header(record, "dlq_reason") == b"oversized"
