"""``EnvelopeReader`` on the eventkit JSON envelope: bounds, validation and poison handling."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventkit.codecs import DecodeLimits, EnvelopeReader, WireEvent, build_payload_decoder
from eventkit.envelope import EventEnvelope
from eventkit.errors import (
    ConfigurationError,
    InvalidEnvelopeError,
    OversizedRecordError,
    PoisonRecordError,
    UndecodableRecordError,
)

if TYPE_CHECKING:
    from collections.abc import Sequence


@dataclass(frozen=True, slots=True, kw_only=True)
class FakeRecord:
    """A record as a transport hands it over."""

    topic: str = "orders"
    partition: int = 0
    offset: int = 0
    timestamp: int = 1_700_000_000_000
    key: bytes | None = None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


SEED_ENVELOPE: dict[str, Any] = {
    "event_id": "5b0c6a52-3c3e-4f7e-9a57-0d3c3a3e5b1a",
    "event_type": "order.created",
    "event_timestamp": "2024-05-01T12:00:00.250000Z",
    "source_service": "order-service",
    "correlation_id": "c0a8e1d2-0000-4000-8000-000000000001",
    "schema_version": 1,
    "metadata": None,
    "data": {"order_id": "o-1", "total": 12.5, "items": [{"sku": "A", "qty": 2}]},
}

DEPTH = 100_000
DEEP_ARRAY = b"[" * DEPTH + b"]" * DEPTH
DEEP_OBJECT = b'{"x":' * DEPTH + b"1" + b"}" * DEPTH


def envelope(**changes: Any) -> dict[str, Any]:
    """The seed envelope with some fields changed."""
    return {**SEED_ENVELOPE, **changes}


def without(field: str) -> dict[str, Any]:
    """The seed envelope without one field."""
    return {name: value for name, value in SEED_ENVELOPE.items() if name != field}


def read(body: dict[str, Any] | bytes | None, **record: Any) -> WireEvent:
    """Read one record through a default ``EnvelopeReader``."""
    value = msgspec.json.encode(body) if isinstance(body, dict) else body
    return EnvelopeReader().read(FakeRecord(value=value, **record))


def with_raw_member(name: str, raw: bytes) -> bytes:
    """The seed envelope's JSON with one member replaced by raw JSON text."""
    return msgspec.json.encode({**SEED_ENVELOPE, name: msgspec.Raw(raw)})


def test_seed_envelope_with_null_metadata_decodes_every_field() -> None:
    """A seed-style envelope decodes with each field as sent and no metadata."""
    event = read(SEED_ENVELOPE)
    assert event.event_id == SEED_ENVELOPE["event_id"]
    assert event.event_type == "order.created"
    assert event.event_timestamp == datetime(2024, 5, 1, 12, 0, 0, 250_000, tzinfo=UTC)
    assert event.source_service == "order-service"
    assert event.correlation_id == SEED_ENVELOPE["correlation_id"]
    assert event.schema_version == 1
    assert event.metadata is None
    assert event.specversion is None
    assert event.identity == SEED_ENVELOPE["event_id"]


def test_metadata_with_non_string_values_decodes_and_only_strings_are_read() -> None:
    """Numbers and nested objects in metadata decode, and ``metadata_str`` skips them."""
    metadata = {"retries": 3, "nested": {"a": [1, 2.5, None]}, "traceparent": "00-abc"}
    event = read(envelope(metadata=metadata))
    assert event.metadata == metadata
    assert event.metadata_str("retries") is None
    assert event.metadata_str("nested") is None
    assert event.metadata_str("traceparent") == "00-abc"


def test_missing_optional_fields_take_their_defaults() -> None:
    """Without ``schema_version`` and ``metadata`` the envelope still decodes."""
    body = dict(SEED_ENVELOPE)
    del body["schema_version"], body["metadata"]
    event = read(body)
    assert event.schema_version == 1
    assert event.metadata is None


def test_data_stays_raw_byte_for_byte() -> None:
    """``data`` is the exact JSON text of the record, undecoded."""
    raw = b'{"b": 1,  "a": [true, "x"]}'
    event = read(with_raw_member("data", raw))
    assert bytes(event.data) == raw


def test_timestamp_keeps_its_utc_offset_as_an_aware_datetime() -> None:
    """A timestamp with an offset decodes to the same instant, timezone-aware."""
    event = read(envelope(event_timestamp="2024-05-01T14:00:00.250+02:00"))
    assert event.event_timestamp == datetime(2024, 5, 1, 12, 0, 0, 250_000, tzinfo=UTC)
    assert event.event_timestamp.utcoffset() == timedelta(hours=2)


@pytest.mark.parametrize(
    "field",
    ["event_id", "event_type", "event_timestamp", "source_service", "correlation_id", "data"],
)
def test_missing_required_field_is_an_invalid_envelope_naming_it(field: str) -> None:
    """Each required field, when absent, gives an ``InvalidEnvelopeError`` that names it."""
    with pytest.raises(InvalidEnvelopeError, match=field):
        read(without(field))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event_id", 5),
        ("event_type", None),
        ("event_type", ""),
        ("event_timestamp", 1_700_000_000),
        ("event_timestamp", "yesterday"),
        ("source_service", ["a"]),
        ("correlation_id", {"a": 1}),
        ("schema_version", "1"),
        ("schema_version", 1.5),
        ("metadata", "traceparent"),
        ("metadata", [1, 2]),
    ],
)
def test_field_of_the_wrong_type_is_an_invalid_envelope(field: str, value: Any) -> None:
    """A field of the wrong type or shape gives an ``InvalidEnvelopeError`` naming it."""
    with pytest.raises(InvalidEnvelopeError, match=field):
        read(envelope(**{field: value}))


def test_top_level_array_is_an_invalid_envelope() -> None:
    """A JSON document that is not an object is an invalid envelope."""
    with pytest.raises(InvalidEnvelopeError):
        read(b"[1, 2]")


def test_naive_timestamp_is_an_invalid_envelope() -> None:
    """A timestamp without a timezone is refused: its instant is unknown."""
    with pytest.raises(InvalidEnvelopeError, match="event_timestamp"):
        read(envelope(event_timestamp="2024-05-01T12:00:00"))


@pytest.mark.parametrize(
    "event_id",
    [
        pytest.param("x" * 129, id="too-long"),
        pytest.param("", id="empty"),
        pytest.param("order 1", id="space"),
        pytest.param("order\x001", id="nul"),
        pytest.param("order\t1", id="tab"),
        pytest.param("order\x1f1", id="identity-separator"),
        pytest.param("order\x7f1", id="del"),
        pytest.param("ordér-1", id="non-ascii"),
        pytest.param("order\u200b1", id="zero-width-space"),
    ],
)
def test_bad_event_id_is_an_invalid_envelope(event_id: str) -> None:
    """An ``event_id`` that is empty, too long or not visible ASCII is refused."""
    with pytest.raises(InvalidEnvelopeError):
        read(envelope(event_id=event_id))


def test_event_id_of_exactly_128_visible_ascii_characters_is_accepted() -> None:
    """The longest allowed ``event_id`` decodes."""
    event_id = "".join(chr(33 + i % 94) for i in range(128))
    assert read(envelope(event_id=event_id)).event_id == event_id


def test_event_id_longer_than_a_custom_limit_is_an_invalid_envelope() -> None:
    """``DecodeLimits.max_event_id_length`` tightens the bound on ``event_id``."""
    reader = EnvelopeReader(DecodeLimits(max_event_id_length=8))
    body = msgspec.json.encode(envelope(event_id="123456789"))
    with pytest.raises(InvalidEnvelopeError, match="event_id"):
        reader.read(FakeRecord(value=body))
    assert reader.read(FakeRecord(value=msgspec.json.encode(envelope(event_id="12345678"))))


@pytest.mark.parametrize(
    "name", ["max_record_bytes", "max_header_count", "max_header_bytes", "max_event_id_length"]
)
def test_a_limit_that_is_not_positive_is_a_configuration_error_naming_it(name: str) -> None:
    """Every bound must be positive; zero is refused at start-up, not read as "no bound"."""
    with pytest.raises(ConfigurationError, match=f"DecodeLimits.{name} must be positive"):
        DecodeLimits(**{name: 0})


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not json", id="text"),
        pytest.param(b'{"event_id": "5b0c', id="truncated"),
        pytest.param(b"\xff\xfe{}", id="binary"),
        pytest.param(msgspec.json.encode(SEED_ENVELOPE) + b" x", id="trailing-garbage"),
    ],
)
def test_value_that_is_not_json_is_undecodable(value: bytes) -> None:
    """A value that is not one JSON document is an ``UndecodableRecordError``."""
    with pytest.raises(UndecodableRecordError):
        read(value)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(
            msgspec.json.encode(SEED_ENVELOPE).replace(b"order-service", b"order-\xff"),
            id="in-a-field",
        ),
        pytest.param(
            msgspec.json.encode(envelope(metadata={"a": "b"})).replace(b'"b"', b'"\xc3"'),
            id="in-metadata",
        ),
        pytest.param(b'{"specversion": "\xff"}', id="in-specversion"),
    ],
)
def test_string_that_is_not_utf8_is_undecodable(value: bytes) -> None:
    """Bad UTF-8 inside a JSON string is an ``UndecodableRecordError``."""
    with pytest.raises(UndecodableRecordError):
        read(value)


def test_none_value_is_undecodable() -> None:
    """A tombstone (no value) is an ``UndecodableRecordError``."""
    with pytest.raises(UndecodableRecordError, match="tombstone"):
        read(None)


def test_deep_object_at_top_level_is_undecodable() -> None:
    """100k nested objects are an ``UndecodableRecordError``, never a RecursionError."""
    with pytest.raises(UndecodableRecordError):
        read(DEEP_OBJECT)


def test_deep_array_at_top_level_is_an_invalid_envelope() -> None:
    """100k nested arrays are refused as not an object before their depth is reached."""
    with pytest.raises(InvalidEnvelopeError):
        read(DEEP_ARRAY)


@pytest.mark.parametrize("member", ["data", "metadata", "unknown_member"])
def test_deep_object_inside_a_member_is_undecodable(member: str) -> None:
    """100k nested objects in ``data``, ``metadata`` or an unknown member are undecodable."""
    with pytest.raises(UndecodableRecordError):
        read(with_raw_member(member, DEEP_OBJECT))


@pytest.mark.parametrize("member", ["data", "unknown_member"])
def test_deep_array_inside_a_member_is_undecodable(member: str) -> None:
    """100k nested arrays in ``data`` or an unknown member are undecodable."""
    with pytest.raises(UndecodableRecordError):
        read(with_raw_member(member, DEEP_ARRAY))


def test_deep_array_as_metadata_is_an_invalid_envelope() -> None:
    """100k nested arrays as ``metadata`` are refused as not an object before their depth."""
    with pytest.raises(InvalidEnvelopeError, match="metadata"):
        read(with_raw_member("metadata", DEEP_ARRAY))


def test_value_over_the_byte_limit_is_oversized() -> None:
    """A value longer than ``max_record_bytes`` is refused before decoding."""
    value = msgspec.json.encode(SEED_ENVELOPE)
    exact = EnvelopeReader(DecodeLimits(max_record_bytes=len(value)))
    assert exact.read(FakeRecord(value=value)).event_id == SEED_ENVELOPE["event_id"]
    reader = EnvelopeReader(DecodeLimits(max_record_bytes=len(value) - 1))
    with pytest.raises(OversizedRecordError):
        reader.read(FakeRecord(value=value))


def test_oversized_value_is_refused_even_when_not_json() -> None:
    """The size check comes first: an oversized non-JSON value is oversized, not undecodable."""
    reader = EnvelopeReader(DecodeLimits(max_record_bytes=10))
    with pytest.raises(OversizedRecordError):
        reader.read(FakeRecord(value=b"x" * 11))


def test_too_many_headers_is_oversized() -> None:
    """More headers than ``max_header_count`` are refused."""
    reader = EnvelopeReader(DecodeLimits(max_header_count=2))
    value = msgspec.json.encode(SEED_ENVELOPE)
    headers = [("a", b"1"), ("b", b"2")]
    assert reader.read(FakeRecord(value=value, headers=headers))
    with pytest.raises(OversizedRecordError, match="headers"):
        reader.read(FakeRecord(value=value, headers=[*headers, ("c", b"3")]))


def test_too_many_header_bytes_is_oversized() -> None:
    """Header names and values over ``max_header_bytes`` in total are refused."""
    reader = EnvelopeReader(DecodeLimits(max_header_bytes=10))
    value = msgspec.json.encode(SEED_ENVELOPE)
    assert reader.read(FakeRecord(value=value, headers=[("k", b"x" * 9)]))
    with pytest.raises(OversizedRecordError, match="bytes"):
        reader.read(FakeRecord(value=value, headers=[("k", b"x" * 10)]))


def test_headers_do_not_change_how_an_eventkit_envelope_is_read() -> None:
    """The publisher's headers ride along without changing the decoded event."""
    headers = [("event_type", b"order.created"), ("content-type", b"application/json")]
    assert read(SEED_ENVELOPE, headers=headers) == read(SEED_ENVELOPE)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([("event_type", b"order.created")], "order.created"),
        ([("content-type", b"application/json"), ("ce_type", b"com.example.a")], "com.example.a"),
        ([("event_id", b"1"), ("content-type", b"application/json")], None),
        ([], None),
        ([("event_type", b"order.\xff")], None),
    ],
    ids=["event_type", "ce_type", "absent", "no-headers", "not-utf8"],
)
def test_scan_reads_the_type_header(headers: list[tuple[str, bytes]], expected: str | None) -> None:
    """``scan`` reads ``event_type`` or ``ce_type`` and gives None when unreadable."""
    assert EnvelopeReader().scan(headers) == (expected, False, None)


# --- properties -------------------------------------------------------------------------------

visible_ascii_ids = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=128
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
json_objects = st.dictionaries(st.text(max_size=12), json_values, max_size=6)
aware_datetimes = st.datetimes(
    min_value=datetime(1970, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
    ),
)
envelopes = st.builds(
    EventEnvelope[dict[str, Any]],
    event_type=st.text(min_size=1, max_size=255),
    data=json_objects,
    source_service=st.text(),
    event_id=visible_ascii_ids,
    event_timestamp=aware_datetimes,
    correlation_id=st.text(),
    schema_version=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    metadata=st.none() | json_objects,
)


@settings(max_examples=200)
@given(sent=envelopes)
def test_any_valid_envelope_round_trips_through_the_reader(
    sent: EventEnvelope[dict[str, Any]],
) -> None:
    """An ``EventEnvelope`` encoded with msgspec reads back field for field, data included."""
    event = EnvelopeReader().read(FakeRecord(value=msgspec.json.encode(sent)))
    assert event.event_id == sent.event_id
    assert event.event_type == sent.event_type
    assert event.event_timestamp == sent.event_timestamp
    assert event.source_service == sent.source_service
    assert event.correlation_id == sent.correlation_id
    assert event.schema_version == sent.schema_version
    assert event.metadata == sent.metadata
    assert event.identity == sent.event_id
    assert build_payload_decoder(dict[str, Any])(event.data) == sent.data


ENVELOPE_MEMBERS = [
    *SEED_ENVELOPE,
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "data_base64",
    "correlationid",
]
near_envelopes = st.dictionaries(st.sampled_from(ENVELOPE_MEMBERS), json_values).map(
    msgspec.json.encode
)


@st.composite
def mutated_envelopes(draw: st.DrawFn) -> bytes:
    """The seed envelope's bytes with a slice overwritten or cut off."""
    value = bytearray(msgspec.json.encode(SEED_ENVELOPE))
    start = draw(st.integers(min_value=0, max_value=len(value)))
    patch = draw(st.binary(max_size=8))
    value[start : start + len(patch)] = patch
    if draw(st.booleans()):
        del value[draw(st.integers(min_value=0, max_value=len(value))) :]
    return bytes(value)


header_lists = st.lists(
    st.tuples(
        st.sampled_from(
            ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "content-type"]
        )
        | st.text(max_size=8),
        st.sampled_from([b"1.0", b"x", b"2024-05-01T12:00:00Z"]) | st.binary(max_size=8),
    ),
    max_size=6,
)


@settings(max_examples=200)
@given(
    value=st.binary(max_size=64) | near_envelopes | mutated_envelopes(),
    headers=st.just([]) | header_lists,
)
def test_arbitrary_bytes_give_an_event_or_a_poison_error(
    value: bytes, headers: list[tuple[str, bytes]]
) -> None:
    """Whatever the bytes and headers, ``read`` returns a ``WireEvent`` or raises poison."""
    try:
        event = EnvelopeReader().read(FakeRecord(value=value, headers=headers))
    except PoisonRecordError:
        return
    assert isinstance(event, WireEvent)
