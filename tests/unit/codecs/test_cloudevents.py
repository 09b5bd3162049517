"""The CloudEvents Kafka binding: interop with the CloudEvents SDK, both modes, and poison input."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from cloudevents.core.bindings import kafka as core_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from cloudevents.v1 import kafka as legacy_kafka
from cloudevents.v1.http import CloudEvent as LegacyCloudEvent
from hypothesis import given, settings
from hypothesis import strategies as st

from eventkit.codecs import EnvelopeReader, WireEvent, build_payload_decoder, cloudevents
from eventkit.codecs.wire import IDENTITY_SEPARATOR
from eventkit.errors import InvalidEnvelopeError, PoisonRecordError, UndecodableRecordError

if TYPE_CHECKING:
    from collections.abc import Sequence

RECORD_TIMESTAMP_MS = 1_700_000_000_123
RECORD_TIME = datetime(2023, 11, 14, 22, 13, 20, 123_000, tzinfo=UTC)
EVENT_TIME = datetime(2024, 5, 1, 12, 0, 0, 250_000, tzinfo=UTC)
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
ORDER = {"order_id": "o-1", "total": 12.5}
DEPTH = 100_000
DEEP_OBJECT = b'{"x":' * DEPTH + b"1" + b"}" * DEPTH


@dataclass(frozen=True, slots=True, kw_only=True)
class FakeRecord:
    """A record as a transport hands it over."""

    topic: str = "orders"
    partition: int = 0
    offset: int = 0
    timestamp: int = RECORD_TIMESTAMP_MS
    key: bytes | None = None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


def read(value: bytes, headers: Sequence[tuple[str, bytes]] = ()) -> WireEvent:
    """Read one record through a default ``EnvelopeReader``."""
    return EnvelopeReader().read(FakeRecord(value=value, headers=headers))


def read_message(message: legacy_kafka.KafkaMessage | core_kafka.KafkaMessage) -> WireEvent:
    """Read an SDK-made Kafka message as eventkit would receive it."""
    value = message.value.encode() if isinstance(message.value, str) else message.value
    return read(value, list(message.headers.items()))


def binary_headers(**overrides: bytes | None) -> list[tuple[str, bytes]]:
    """Headers of a valid binary-mode event, with some replaced or (``None``) removed."""
    headers: dict[str, bytes | None] = {
        "ce_specversion": b"1.0",
        "ce_id": b"A-1",
        "ce_source": b"/orders",
        "ce_type": b"com.example.order.created",
        "content-type": b"application/json",
    }
    headers.update(overrides)
    return [(name, value) for name, value in headers.items() if value is not None]


def structured_body(**overrides: Any) -> bytes:
    """A valid structured-mode body, with members replaced or (``...``) removed."""
    body: dict[str, Any] = {
        "specversion": "1.0",
        "id": "A-1",
        "source": "/orders",
        "type": "com.example.order.created",
        "datacontenttype": "application/json",
        "data": ORDER,
    }
    body.update(overrides)
    return msgspec.json.encode({name: value for name, value in body.items() if value is not ...})


def decoded_data(event: WireEvent) -> Any:
    """The event's data decoded as any JSON."""
    return build_payload_decoder(Any)(event.data)


# --- SDK → eventkit ---------------------------------------------------------------------------


def sdk_event() -> CloudEvent:
    """A CloudEvent made with the SDK's core API, with tracing and correlation extensions."""
    return CloudEvent(
        {
            "id": "A-1",
            "source": "/orders",
            "type": "com.example.order.created",
            "time": EVENT_TIME,
            "datacontenttype": "application/json",
            "subject": "o-1",
            "traceparent": TRACEPARENT,
            "tracestate": "vendor=1",
            "correlationid": "corr-9",
        },
        dict(ORDER),
    )


def legacy_sdk_event() -> LegacyCloudEvent:
    """The same CloudEvent made with the SDK's legacy ``cloudevents.v1`` API."""
    return LegacyCloudEvent(
        {
            "id": "A-1",
            "source": "/orders",
            "type": "com.example.order.created",
            "time": "2024-05-01T12:00:00.25Z",
            "datacontenttype": "application/json",
            "subject": "o-1",
            "traceparent": TRACEPARENT,
            "tracestate": "vendor=1",
            "correlationid": "corr-9",
        },
        dict(ORDER),
    )


def assert_is_the_order_event(event: WireEvent) -> None:
    """The WireEvent carries every attribute of ``sdk_event``."""
    assert event.event_id == "A-1"
    assert event.event_type == "com.example.order.created"
    assert event.source_service == "/orders"
    assert event.event_timestamp == EVENT_TIME
    assert event.correlation_id == "corr-9"
    assert event.specversion == "1.0"
    assert event.identity == f"/orders{IDENTITY_SEPARATOR}A-1"
    assert decoded_data(event) == ORDER
    assert event.metadata_str("traceparent") == TRACEPARENT
    assert event.metadata_str("tracestate") == "vendor=1"
    assert event.metadata_str("subject") == "o-1"


MakeMessage = Callable[[], legacy_kafka.KafkaMessage | core_kafka.KafkaMessage]
MESSAGES_FROM_SDK: dict[str, MakeMessage] = {
    "core-binary": lambda: core_kafka.to_binary(sdk_event(), JSONFormat()),
    "core-structured": lambda: core_kafka.to_structured(sdk_event(), JSONFormat()),
    "legacy-binary": lambda: legacy_kafka.to_binary(legacy_sdk_event()),
    "legacy-structured": lambda: legacy_kafka.to_structured(legacy_sdk_event()),
}


@pytest.mark.parametrize("make_message", MESSAGES_FROM_SDK.values(), ids=MESSAGES_FROM_SDK)
def test_sdk_event_decodes_into_the_right_wire_event(make_message: MakeMessage) -> None:
    """Events the SDK writes in either mode decode with every attribute in its place."""
    assert_is_the_order_event(read_message(make_message()))


def test_sdk_binary_event_keeps_its_content_type_and_raw_value() -> None:
    """Binary mode takes ``datacontenttype`` from ``content-type`` and the value as data."""
    message = core_kafka.to_binary(sdk_event(), JSONFormat())
    event = read_message(message)
    assert event.datacontenttype == "application/json"
    assert bytes(event.data) == message.value


def test_sdk_structured_event_takes_its_content_type_from_the_body() -> None:
    """Structured mode takes ``datacontenttype`` from the JSON member, not the header."""
    event = read_message(core_kafka.to_structured(sdk_event(), JSONFormat()))
    assert event.datacontenttype == "application/json"


def test_sdk_binary_event_with_binary_data_keeps_the_bytes() -> None:
    """Non-JSON data in binary mode reaches a ``bytes`` payload unchanged."""
    data = b"\x00\xff\x10binary"
    event = CloudEvent(
        {
            "id": "B-1",
            "source": "/blobs",
            "type": "com.example.blob",
            "datacontenttype": "application/octet-stream",
        },
        data,
    )
    wire = read_message(core_kafka.to_binary(event, JSONFormat()))
    assert build_payload_decoder(bytes)(wire.data) == data
    assert wire.datacontenttype == "application/octet-stream"


@pytest.mark.parametrize("api", ["core", "legacy"])
def test_sdk_structured_event_with_binary_data_decodes_data_base64(api: str) -> None:
    """Structured mode's ``data_base64`` becomes the decoded bytes."""
    data = b"\x00\xff\x10binary"
    attributes = {
        "id": "B-1",
        "source": "/blobs",
        "type": "com.example.blob",
        "datacontenttype": "application/octet-stream",
    }
    message = (
        core_kafka.to_structured(CloudEvent(attributes, data), JSONFormat())
        if api == "core"
        else legacy_kafka.to_structured(LegacyCloudEvent(attributes, data))
    )
    assert b"data_base64" in message.value
    assert build_payload_decoder(bytes)(read_message(message).data) == data


def test_sdk_event_without_time_takes_the_record_timestamp() -> None:
    """An event without ``time`` is stamped with the record's timestamp, in UTC."""
    event = CloudEvent({"id": "A-1", "source": "/orders", "type": "t"}, dict(ORDER))
    message = core_kafka.to_binary(event, JSONFormat())
    headers = [(name, value) for name, value in message.headers.items() if name != "ce_time"]
    wire = read(message.value, headers)
    assert wire.event_timestamp == RECORD_TIME
    assert wire.event_timestamp.tzinfo is not None


def test_structured_event_without_time_takes_the_record_timestamp() -> None:
    """A structured event without ``time`` is stamped with the record's timestamp."""
    assert read(structured_body()).event_timestamp == RECORD_TIME


def test_event_without_correlationid_correlates_on_its_id() -> None:
    """``correlation_id`` falls back to the CloudEvent ``id``."""
    assert read(structured_body()).correlation_id == "A-1"
    assert read(b"{}", binary_headers()).correlation_id == "A-1"


def test_event_without_extensions_has_no_metadata() -> None:
    """Without extension attributes ``metadata`` is None in both modes."""
    assert read(structured_body()).metadata is None
    assert read(b"{}", binary_headers()).metadata is None


def test_structured_extension_values_become_strings() -> None:
    """Integer and boolean extensions read as their CloudEvents string forms; null is absent."""
    body = structured_body(retries=3, sampled=True, replay=False, gone=None, subject="o-1")
    event = read(body)
    assert event.metadata == {
        "retries": "3",
        "sampled": "true",
        "replay": "false",
        "subject": "o-1",
    }


@pytest.mark.parametrize("value", [1.5, {"a": 1}, [1]], ids=["float", "object", "array"])
def test_structured_extension_of_a_non_attribute_type_is_invalid(value: Any) -> None:
    """An extension that is not a string, integer or boolean is an invalid envelope."""
    with pytest.raises(InvalidEnvelopeError, match="odd"):
        read(structured_body(odd=value))


def test_structured_event_without_data_has_null_data() -> None:
    """A structured event with neither ``data`` nor ``data_base64`` has ``null`` data."""
    event = read(structured_body(data=...))
    assert bytes(event.data) == b"null"


def test_binary_and_structured_events_with_equal_source_and_id_share_an_identity() -> None:
    """Identity is ``source`` + ``id``, whatever the mode, and differs by source."""
    binary = read(b"{}", binary_headers())
    structured = read(structured_body())
    other_source = read(structured_body(source="/billing"))
    assert binary.identity == structured.identity
    assert other_source.identity != structured.identity
    assert other_source.event_id == structured.event_id


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([("content-type", b"application/json")], id="plain-json"),
        pytest.param([("content-type", b"text/plain")], id="text-plain"),
        pytest.param([], id="no-header"),
    ],
)
def test_structured_mode_is_detected_by_the_specversion_member(
    headers: list[tuple[str, bytes]],
) -> None:
    """A body with ``specversion`` is a structured CloudEvent whatever ``content-type`` says."""
    event = read(structured_body(), headers)
    assert event.specversion == "1.0"
    assert event.identity == f"/orders{IDENTITY_SEPARATOR}A-1"


def test_eventkit_envelope_with_a_specversion_member_is_read_as_a_cloudevent() -> None:
    """A body with both envelope fields and ``specversion`` is taken as a CloudEvent."""
    body = {
        "event_id": "E-1",
        "event_type": "order.created",
        "event_timestamp": "2024-05-01T12:00:00Z",
        "source_service": "orders",
        "correlation_id": "c-1",
        "data": {},
        "specversion": "1.0",
        "id": "A-1",
        "source": "/orders",
        "type": "com.example.order.created",
    }
    event = read(msgspec.json.encode(body))
    assert event.event_id == "A-1"
    assert event.identity == f"/orders{IDENTITY_SEPARATOR}A-1"


def test_scan_routes_a_binary_event_on_ce_type() -> None:
    """``scan`` reads the type of a binary CloudEvent from ``ce_type`` and flags binary mode."""
    assert EnvelopeReader().scan(binary_headers()) == ("com.example.order.created", True, None)


# --- eventkit → SDK ---------------------------------------------------------------------------


ENCODE_ARGS: dict[str, Any] = {
    "event_id": "A-1",
    "source": "/orders",
    "event_type": "com.example.order.created",
    "data": msgspec.json.encode(ORDER),
    "time": EVENT_TIME,
    "extensions": {"traceparent": TRACEPARENT, "subject": "o-1"},
}


def assert_sdk_read_the_order(event: CloudEvent) -> None:
    """The SDK's event carries every attribute ``ENCODE_ARGS`` sent."""
    assert event.get_id() == "A-1"
    assert event.get_source() == "/orders"
    assert event.get_type() == "com.example.order.created"
    assert event.get_specversion() == "1.0"
    assert event.get_time() == EVENT_TIME
    assert event.get_subject() == "o-1"
    assert event.get_extension("traceparent") == TRACEPARENT
    assert event.get_data() == ORDER


def core_message(encoded: cloudevents.EncodedEvent) -> core_kafka.KafkaMessage:
    """Our encoding as the SDK's core Kafka message."""
    return core_kafka.KafkaMessage(headers=dict(encoded.headers), key=None, value=encoded.value)


def legacy_message(encoded: cloudevents.EncodedEvent) -> legacy_kafka.KafkaMessage:
    """Our encoding as the SDK's legacy Kafka message."""
    return legacy_kafka.KafkaMessage(headers=dict(encoded.headers), key=None, value=encoded.value)


def test_encode_binary_is_read_by_the_sdk() -> None:
    """The SDK's core ``from_binary`` reads every attribute and the data we wrote."""
    encoded = cloudevents.encode_binary(**ENCODE_ARGS)
    event = core_kafka.from_binary(core_message(encoded), JSONFormat())
    assert isinstance(event, CloudEvent)
    assert_sdk_read_the_order(event)
    assert event.get_datacontenttype() == "application/json"


def test_encode_structured_is_read_by_the_sdk() -> None:
    """The SDK's core ``from_structured`` reads every attribute and the data we wrote."""
    encoded = cloudevents.encode_structured(**ENCODE_ARGS)
    assert encoded.headers == [("content-type", b"application/cloudevents+json")]
    event = core_kafka.from_structured(core_message(encoded), JSONFormat())
    assert isinstance(event, CloudEvent)
    assert_sdk_read_the_order(event)


@pytest.mark.parametrize("encode", [cloudevents.encode_binary, cloudevents.encode_structured])
def test_encoded_event_is_read_by_the_legacy_sdk(encode: Any) -> None:
    """The legacy SDK reads our binary and structured encodings too."""
    encoded = encode(**ENCODE_ARGS)
    from_message = (
        legacy_kafka.from_binary
        if encode is cloudevents.encode_binary
        else legacy_kafka.from_structured
    )
    event = from_message(legacy_message(encoded))
    assert event["id"] == "A-1"
    assert event["source"] == "/orders"
    assert event["type"] == "com.example.order.created"
    assert event["traceparent"] == TRACEPARENT
    assert datetime.fromisoformat(event["time"]) == EVENT_TIME
    assert event.get_data() == ORDER


def test_encode_structured_with_binary_content_uses_data_base64() -> None:
    """Non-JSON data goes out as ``data_base64`` and the SDK reads the same bytes."""
    data = b"\x00\xff\x10binary"
    encoded = cloudevents.encode_structured(
        event_id="B-1",
        source="/blobs",
        event_type="com.example.blob",
        data=data,
        content_type="application/octet-stream",
    )
    body = msgspec.json.decode(encoded.value)
    assert body["data_base64"] == base64.b64encode(data).decode()
    assert "data" not in body
    event = core_kafka.from_structured(core_message(encoded), JSONFormat())
    assert event.get_data() == data
    assert build_payload_decoder(bytes)(read(encoded.value, encoded.headers).data) == data


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/vnd.order+json",
        "text/json",
        None,
    ],
)
def test_encode_structured_embeds_json_data_for_json_content_types(
    content_type: str | None,
) -> None:
    """Data with a JSON content type (or none) is embedded as JSON, not base64."""
    encoded = cloudevents.encode_structured(
        event_id="A-1",
        source="/orders",
        event_type="t",
        data=b'{"a": [1, 2]}',
        content_type=content_type,
    )
    assert msgspec.json.decode(encoded.value)["data"] == {"a": [1, 2]}


def test_encode_structured_with_empty_data_has_no_data_member() -> None:
    """Empty data sends neither ``data`` nor ``data_base64``."""
    encoded = cloudevents.encode_structured(
        event_id="A-1", source="/orders", event_type="t", data=b""
    )
    body = msgspec.json.decode(encoded.value)
    assert "data" not in body
    assert "data_base64" not in body


def test_encode_sends_time_in_utc() -> None:
    """A time with an offset is sent as the same instant in UTC with a ``Z``."""
    time = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    encoded = cloudevents.encode_binary(
        event_id="A-1", source="/orders", event_type="t", data=b"{}", time=time
    )
    assert ("ce_time", b"2024-05-01T12:00:00Z") in encoded.headers


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"event_id": ""}, id="empty-id"),
        pytest.param({"source": ""}, id="empty-source"),
        pytest.param({"event_type": ""}, id="empty-type"),
        pytest.param({"time": datetime(2024, 5, 1)}, id="naive-time"),
        pytest.param({"extensions": {"traceParent": "x"}}, id="uppercase-extension"),
        pytest.param({"extensions": {"trace_parent": "x"}}, id="underscore-extension"),
        pytest.param({"extensions": {"id": "x"}}, id="context-attribute-extension"),
        pytest.param({"extensions": {"data": "x"}}, id="data-extension"),
    ],
)
@pytest.mark.parametrize("encode", [cloudevents.encode_binary, cloudevents.encode_structured])
def test_encode_refuses_invalid_attributes(encode: Any, changes: dict[str, Any]) -> None:
    """Empty required attributes, naive times and bad extension names are a ``ValueError``."""
    with pytest.raises(ValueError, match="CloudEvent"):
        encode(**{**ENCODE_ARGS, **changes})


def test_encode_structured_refuses_non_json_data_with_a_json_content_type() -> None:
    """Data that is not JSON cannot be embedded when the content type says JSON."""
    with pytest.raises(ValueError, match="not JSON"):
        cloudevents.encode_structured(**{**ENCODE_ARGS, "data": b"{nope"})


# --- poison input -----------------------------------------------------------------------------


@pytest.mark.parametrize("attribute", ["id", "source", "type"])
def test_binary_event_missing_a_required_attribute_is_invalid(attribute: str) -> None:
    """A binary event without ``id``, ``source`` or ``type`` names the missing attribute."""
    with pytest.raises(InvalidEnvelopeError, match=f"'{attribute}'"):
        read(b"{}", binary_headers(**{f"ce_{attribute}": None}))


@pytest.mark.parametrize("attribute", ["id", "source", "type"])
def test_binary_event_with_an_empty_required_attribute_is_invalid(attribute: str) -> None:
    """An empty ``id``, ``source`` or ``type`` header counts as missing."""
    with pytest.raises(InvalidEnvelopeError, match=f"'{attribute}'"):
        read(b"{}", binary_headers(**{f"ce_{attribute}": b""}))


@pytest.mark.parametrize("attribute", ["id", "source", "type"])
def test_structured_event_missing_a_required_attribute_is_invalid(attribute: str) -> None:
    """A structured event without ``id``, ``source`` or ``type`` names the missing attribute."""
    with pytest.raises(InvalidEnvelopeError, match=f"'{attribute}'"):
        read(structured_body(**{attribute: ...}))


def test_structured_event_missing_specversion_is_invalid() -> None:
    """Decoded as structured mode, a body without ``specversion`` names it."""
    with pytest.raises(InvalidEnvelopeError, match="'specversion'"):
        cloudevents.decode_structured(structured_body(specversion=...), RECORD_TIMESTAMP_MS)


def test_binary_decode_without_specversion_is_invalid() -> None:
    """Decoded as binary mode, headers without ``ce_specversion`` name it."""
    with pytest.raises(InvalidEnvelopeError, match="'specversion'"):
        cloudevents.decode_binary(b"{}", binary_headers(ce_specversion=None), RECORD_TIMESTAMP_MS)


@pytest.mark.parametrize("attribute", ["id", "source", "type", "time", "subject"])
def test_structured_attribute_of_the_wrong_type_is_invalid(attribute: str) -> None:
    """A context attribute that is not a string is an invalid envelope naming it."""
    with pytest.raises(InvalidEnvelopeError, match=attribute):
        read(structured_body(**{attribute: 42}))


@pytest.mark.parametrize("specversion", ["0.3", "2.0", "1"])
def test_wrong_specversion_is_invalid_in_both_modes(specversion: str) -> None:
    """Only CloudEvents 1.0 is read; the error names the version received."""
    with pytest.raises(InvalidEnvelopeError, match=f"'{specversion}'"):
        read(b"{}", binary_headers(ce_specversion=specversion.encode()))
    with pytest.raises(InvalidEnvelopeError, match=f"'{specversion}'"):
        read(structured_body(specversion=specversion))


@pytest.mark.parametrize(
    "time",
    ["2024-05-01T12:00:00", "yesterday", "2024-13-01T12:00:00Z"],
    ids=["naive", "text", "bad-month"],
)
def test_time_that_is_not_aware_rfc3339_is_invalid_in_both_modes(time: str) -> None:
    """``time`` must be an RFC 3339 timestamp with a timezone."""
    with pytest.raises(InvalidEnvelopeError, match="time"):
        read(b"{}", binary_headers(ce_time=time.encode()))
    with pytest.raises(InvalidEnvelopeError, match="time"):
        read(structured_body(time=time))


@pytest.mark.parametrize("data_base64", ["!!not base64!!", "AAE", "AA=E", "ü"])
def test_bad_data_base64_is_undecodable(data_base64: str) -> None:
    """``data_base64`` that is not valid base64 is an ``UndecodableRecordError``."""
    with pytest.raises(UndecodableRecordError, match="base64"):
        read(structured_body(data=..., data_base64=data_base64))


def test_data_and_data_base64_together_are_invalid() -> None:
    """``data`` and ``data_base64`` are mutually exclusive."""
    with pytest.raises(InvalidEnvelopeError, match="data_base64"):
        read(structured_body(data_base64="AAE="))


def test_data_base64_with_null_data_is_read_as_the_bytes() -> None:
    """A ``null`` data member counts as absent next to ``data_base64``."""
    event = read(structured_body(data=None, data_base64="AAE="))
    assert bytes(event.data) == b"\x00\x01"


@pytest.mark.parametrize(
    "header", ["ce_id", "ce_source", "ce_type", "ce_time", "ce_traceparent", "content-type"]
)
def test_header_value_that_is_not_utf8_is_invalid(header: str) -> None:
    """A CloudEvents header whose value is not UTF-8 is an invalid envelope naming it."""
    with pytest.raises(InvalidEnvelopeError, match=header):
        read(b"{}", binary_headers(**{header: b"\xff\xfe"}))


def test_non_cloudevents_header_that_is_not_utf8_is_ignored() -> None:
    """Headers outside the binding are not read, so their bytes do not matter."""
    headers = [*binary_headers(), ("x-blob", b"\xff\xfe")]
    assert read(b"{}", headers).event_id == "A-1"


def test_duplicate_attribute_header_is_invalid() -> None:
    """Two values for one attribute are ambiguous and refused."""
    headers = [*binary_headers(), ("ce_type", b"com.example.other")]
    with pytest.raises(InvalidEnvelopeError, match="ce_type"):
        read(b"{}", headers)


def test_structured_string_that_is_not_utf8_is_undecodable() -> None:
    """Bad UTF-8 inside a structured event's strings is an ``UndecodableRecordError``."""
    for member in ("id", "subject", "traceparent"):
        value = structured_body(**{member: "MARK"}).replace(b'"MARK"', b'"\xff"')
        with pytest.raises(UndecodableRecordError):
            read(value)


def test_structured_body_that_is_not_json_is_undecodable() -> None:
    """Decoded as structured mode, a body that is not JSON is an ``UndecodableRecordError``."""
    with pytest.raises(UndecodableRecordError):
        cloudevents.decode_structured(b'{"specversion": "1.0", ', RECORD_TIMESTAMP_MS)


def test_structured_body_that_is_not_an_object_is_invalid() -> None:
    """Decoded as structured mode, a JSON array is an invalid envelope."""
    with pytest.raises(InvalidEnvelopeError):
        cloudevents.decode_structured(b'["specversion"]', RECORD_TIMESTAMP_MS)


@pytest.mark.parametrize("member", ["data", "traceparent", "unknown"])
def test_deep_json_in_a_structured_event_is_undecodable(member: str) -> None:
    """100k-deep JSON inside a structured event is undecodable, never a RecursionError."""
    value = structured_body(**{member: msgspec.Raw(DEEP_OBJECT)})
    with pytest.raises(UndecodableRecordError):
        read(value)
    with pytest.raises(UndecodableRecordError):
        cloudevents.decode_structured(value, RECORD_TIMESTAMP_MS)


def test_binary_data_is_not_decoded_by_the_reader() -> None:
    """A binary event's value is not parsed: deep or non-JSON data waits for the payload decoder."""
    assert bytes(read(DEEP_OBJECT, binary_headers()).data) == DEEP_OBJECT
    assert bytes(read(b"\xff not json", binary_headers()).data) == b"\xff not json"


@pytest.mark.parametrize(
    "source", ["/orders\x1fA", "/orders\n", "x" * 1025], ids=["separator", "newline", "long"]
)
def test_source_that_could_blur_the_identity_is_invalid(source: str) -> None:
    """A ``source`` with control characters or over 1024 characters is refused."""
    with pytest.raises(InvalidEnvelopeError, match="source"):
        read(structured_body(source=source))


def test_type_longer_than_255_characters_is_invalid() -> None:
    """A ``type`` longer than eventkit allows is refused."""
    with pytest.raises(InvalidEnvelopeError, match="type"):
        read(b"{}", binary_headers(ce_type=b"t" * 256))


@pytest.mark.parametrize("event_id", ["A 1", "A\x001", "Ä-1", "x" * 129])
def test_cloudevent_id_is_held_to_the_event_id_rules(event_id: str) -> None:
    """A CloudEvent ``id`` must be visible ASCII without spaces and at most 128 characters."""
    with pytest.raises(InvalidEnvelopeError, match="event_id"):
        read(b"{}", binary_headers(ce_id=event_id.encode()))
    with pytest.raises(InvalidEnvelopeError, match="event_id"):
        read(structured_body(id=event_id))


def test_record_timestamp_out_of_range_is_invalid() -> None:
    """Without ``time``, a record timestamp no datetime can hold is an invalid envelope."""
    with pytest.raises(InvalidEnvelopeError, match="timestamp"):
        cloudevents.decode_binary(b"{}", binary_headers(), 2**62)


# --- properties -------------------------------------------------------------------------------

RESERVED = {"specversion", "id", "source", "type", "time", "datacontenttype", "dataschema", "data"}
visible_ascii_ids = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=128
)
printable_text = st.text(
    alphabet=st.characters(exclude_categories=("C", "Z")) | st.just(" "),
    min_size=1,
    max_size=64,
)
extension_names = st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True).filter(
    lambda name: name not in RESERVED
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
payloads = st.one_of(
    json_values.map(lambda value: ("application/json", msgspec.json.encode(value))),
    st.binary(min_size=1).map(lambda data: ("application/octet-stream", data)),
)
times = st.none() | st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-3, minutes=-30))]),
)


@settings(max_examples=150)
@given(
    binary=st.booleans(),
    event_id=visible_ascii_ids,
    source=printable_text,
    event_type=st.text(min_size=1, max_size=255),
    extensions=st.dictionaries(extension_names, st.text(), max_size=5),
    payload=payloads,
    time=times,
)
def test_any_encoded_event_round_trips_through_the_reader_and_the_sdk(
    *,
    binary: bool,
    event_id: str,
    source: str,
    event_type: str,
    extensions: dict[str, str],
    payload: tuple[str, bytes],
    time: datetime | None,
) -> None:
    """What we encode, in either mode, reads back the same through eventkit and the SDK."""
    content_type, data = payload
    encode = cloudevents.encode_binary if binary else cloudevents.encode_structured
    encoded = encode(
        event_id=event_id,
        source=source,
        event_type=event_type,
        data=data,
        content_type=content_type,
        time=time,
        extensions=extensions,
    )
    event = read(encoded.value, encoded.headers)
    assert event.event_id == event_id
    assert event.source_service == source
    assert event.event_type == event_type
    assert event.event_timestamp == (time if time is not None else RECORD_TIME)
    assert event.correlation_id == (extensions.get("correlationid") or event_id)
    assert event.metadata == (extensions or None)
    assert event.datacontenttype == content_type
    assert event.identity == f"{source}{IDENTITY_SEPARATOR}{event_id}"
    assert bytes(event.data) == data

    message = core_message(encoded)
    sdk = (
        core_kafka.from_binary(message, JSONFormat())
        if binary
        else core_kafka.from_structured(message, JSONFormat())
    )
    assert (sdk.get_id(), sdk.get_source(), sdk.get_type()) == (event_id, source, event_type)
    assert {name: sdk.get_extension(name) for name in extensions} == extensions
    if time is not None:
        assert sdk.get_time() == time


@settings(max_examples=200)
@given(
    headers=st.lists(
        st.tuples(
            st.sampled_from(["ce_id", "ce_source", "ce_type", "ce_time", "ce_x", "content-type"]),
            st.binary(max_size=12) | st.sampled_from([b"", b"A-1", b"2024-05-01T12:00:00Z"]),
        ),
        max_size=6,
    ),
    value=st.binary(max_size=32),
)
def test_any_binary_headers_give_an_event_or_a_poison_error(
    headers: list[tuple[str, bytes]], value: bytes
) -> None:
    """Whatever the ``ce_`` headers hold, reading gives a ``WireEvent`` or raises poison."""
    try:
        event = read(value, [("ce_specversion", b"1.0"), *headers])
    except PoisonRecordError:
        return
    assert isinstance(event, WireEvent)


structured_members = st.dictionaries(
    st.sampled_from(
        ["id", "source", "type", "time", "data", "data_base64", "datacontenttype", "x1"]
    ),
    json_values,
    max_size=6,
)


@settings(max_examples=200)
@given(members=structured_members)
def test_any_structured_body_gives_an_event_or_a_poison_error(members: dict[str, Any]) -> None:
    """Whatever the members of a structured body, reading gives an event or raises poison."""
    try:
        event = read(msgspec.json.encode({"specversion": "1.0", **members}))
    except PoisonRecordError:
        return
    assert isinstance(event, WireEvent)
