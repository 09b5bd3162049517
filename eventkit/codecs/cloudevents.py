"""CloudEvents 1.0 over Kafka (the Kafka protocol binding): decoding onto ``WireEvent``, encoding.

Binary mode carries the attributes in ``ce_``-prefixed headers (``datacontenttype`` in
``content-type``) and the data as the record value; structured mode carries one JSON object
(``application/cloudevents+json``) as the value. Decoding maps an event onto ``WireEvent``:

- ``id`` → ``event_id``, ``type`` → ``event_type``, ``source`` → ``source_service``;
- ``time`` → ``event_timestamp`` (timezone-aware RFC 3339), else the record timestamp in UTC;
- the ``correlationid`` extension → ``correlation_id``, else the ``id``;
- ``data`` stays raw: binary mode the record value as it is; structured mode the JSON of the
  ``data`` member, the bytes of ``data_base64``, or ``null`` when there is neither;
- every other attribute (extensions such as ``traceparent``/``tracestate``, and the optional
  ``subject`` and ``dataschema``) → ``metadata`` as strings (``None`` when there is none).

The identity of a CloudEvent is ``source`` + ``id`` (``WireEvent.identity``).
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple

import msgspec

from eventkit.codecs.wire import UtcTimestamp, WireEvent
from eventkit.errors import InvalidEnvelopeError, UndecodableRecordError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from eventkit.ports import Headers

SPECVERSION = "1.0"
HEADER_PREFIX = "ce_"
SPECVERSION_HEADER = "ce_specversion"
TYPE_HEADER = "ce_type"
CONTENT_TYPE_HEADER = "content-type"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
JSON_CONTENT_TYPE = "application/json"

# as long as WireEvent.event_type allows
_MAX_TYPE_LENGTH = 255
# source is half of the idempotency key, so it is bounded like event_id is
_MAX_SOURCE_LENGTH = 1024
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NULL = msgspec.Raw(b"null")
_NO_EXTENSIONS: Mapping[str, str] = MappingProxyType({})
_EXTENSION_NAME = re.compile(r"[a-z0-9]+")
# attributes with a parameter or WireEvent field of their own; the rest go to metadata
_CONTEXT_ATTRIBUTES = frozenset(
    {"specversion", "id", "source", "type", "time", "datacontenttype", "data", "data_base64"}
)


class _StructuredEvent(msgspec.Struct):
    """The attributes of a structured-mode CloudEvent that have a fixed type."""

    specversion: str | None = None
    id: str | None = None
    source: str | None = None
    type: str | None = None
    time: UtcTimestamp | None = None
    datacontenttype: str | None = None
    dataschema: str | None = None
    subject: str | None = None
    data: msgspec.Raw = msgspec.Raw()
    data_base64: str | None = None


_ExtensionValue = str | int | bool | None

_structured_decoder = msgspec.json.Decoder(_StructuredEvent)
_members_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_extension_decoder: msgspec.json.Decoder[_ExtensionValue] = msgspec.json.Decoder(_ExtensionValue)
_json_checker = msgspec.json.Decoder(msgspec.Raw)


class EncodedEvent(NamedTuple):
    """A CloudEvent ready to publish: the record value and the headers to send with it."""

    value: bytes
    headers: list[tuple[str, bytes]]


def decode_binary(value: bytes, headers: Headers, timestamp_ms: int) -> WireEvent:
    """Decode a binary-mode CloudEvent; ``timestamp_ms`` is the record's (used without ``time``).

    Raises ``InvalidEnvelopeError`` when a required attribute is missing or empty, the
    specversion is not 1.0, ``time`` is not a timezone-aware RFC 3339 timestamp, a header value
    is not UTF-8, or an attribute header appears twice.
    """
    attributes: dict[str, str] = {}
    for name, raw in headers:
        if name == CONTENT_TYPE_HEADER:
            attribute = "datacontenttype"
        elif name.startswith(HEADER_PREFIX):
            attribute = name[len(HEADER_PREFIX) :]
        else:
            continue
        if attribute in attributes:
            # two values for one attribute are ambiguous: routing and handling could disagree
            raise InvalidEnvelopeError(f"invalid CloudEvent: header {name!r} appears twice")
        attributes[attribute] = _header_text(name, raw)
    time_text = attributes.pop("time", None)
    return _wire_event(
        specversion=attributes.pop("specversion", None),
        event_id=attributes.pop("id", None),
        source=attributes.pop("source", None),
        event_type=attributes.pop("type", None),
        time=None if time_text is None else _parse_time(time_text),
        datacontenttype=attributes.pop("datacontenttype", None),
        data=msgspec.Raw(value),
        extensions=attributes,
        timestamp_ms=timestamp_ms,
    )


def decode_structured(value: bytes, timestamp_ms: int) -> WireEvent:
    """Decode a structured-mode (JSON) CloudEvent; ``timestamp_ms`` is used without ``time``.

    Raises ``UndecodableRecordError`` when the value is not JSON, has a string that is not
    UTF-8, is nested too deep, or ``data_base64`` is not base64; ``InvalidEnvelopeError`` when
    it is not an object, a required attribute is missing or empty, the specversion is not 1.0,
    an attribute has the wrong type (``time`` must be timezone-aware RFC 3339; extensions
    strings, integers or booleans), or both ``data`` and ``data_base64`` are set.
    """
    try:
        event = _structured_decoder.decode(value)
        # msgspec cannot hand back unknown members, so the extensions need a second pass
        members = _members_decoder.decode(value)
    except msgspec.ValidationError as exc:
        raise InvalidEnvelopeError(f"invalid CloudEvent: {exc}") from None
    except msgspec.DecodeError as exc:
        raise UndecodableRecordError(f"undecodable record: {exc}") from None
    except UnicodeDecodeError:
        # msgspec raises UnicodeDecodeError, not DecodeError, on bad UTF-8 inside a string
        raise UndecodableRecordError("undecodable record: a string is not UTF-8") from None
    except RecursionError:
        # msgspec raises RecursionError, not DecodeError, on very deep input
        raise UndecodableRecordError("undecodable record: JSON nested too deep") from None
    extensions: dict[str, str] = {}
    for name, raw in members.items():
        if name not in _CONTEXT_ATTRIBUTES:
            text = _extension_text(name, raw)
            if text is not None:
                extensions[name] = text
    return _wire_event(
        specversion=event.specversion,
        event_id=event.id,
        source=event.source,
        event_type=event.type,
        time=event.time,
        datacontenttype=event.datacontenttype,
        data=_structured_data(event),
        extensions=extensions,
        timestamp_ms=timestamp_ms,
    )


def encode_binary(
    *,
    event_id: str,
    source: str,
    event_type: str,
    data: bytes,
    content_type: str | None = JSON_CONTENT_TYPE,
    time: datetime | None = None,
    extensions: Mapping[str, str] = _NO_EXTENSIONS,
) -> EncodedEvent:
    """Encode a binary-mode CloudEvent: ``data`` as the value, the attributes as headers.

    ``extensions`` holds every other attribute (extensions such as ``traceparent``, or the
    optional ``subject`` and ``dataschema``), sent as ``ce_<name>`` headers. ``time`` is sent
    in UTC. Raises ``ValueError`` when ``id``, ``source`` or ``type`` is empty, ``time`` is
    naive, or an extension name is not lowercase letters and digits or names a context
    attribute.
    """
    _check_attributes(event_id, source, event_type, time, extensions)
    headers = [
        (SPECVERSION_HEADER, SPECVERSION.encode()),
        ("ce_id", event_id.encode()),
        ("ce_source", source.encode()),
        (TYPE_HEADER, event_type.encode()),
    ]
    if time is not None:
        headers.append(("ce_time", _format_time(time).encode()))
    if content_type is not None:
        headers.append((CONTENT_TYPE_HEADER, content_type.encode()))
    headers.extend((HEADER_PREFIX + name, text.encode()) for name, text in extensions.items())
    return EncodedEvent(bytes(data), headers)


def encode_structured(
    *,
    event_id: str,
    source: str,
    event_type: str,
    data: bytes,
    content_type: str | None = JSON_CONTENT_TYPE,
    time: datetime | None = None,
    extensions: Mapping[str, str] = _NO_EXTENSIONS,
) -> EncodedEvent:
    """Encode a structured-mode CloudEvent: one JSON object as the value.

    The only header is ``content-type: application/cloudevents+json``. ``data`` is embedded
    as JSON under ``data`` when the content type is JSON (``application/json``, ``text/json``,
    ``*/*+json`` or none), else base64-encoded under ``data_base64``; empty ``data`` means no
    data. Raises ``ValueError`` as ``encode_binary`` does, and when ``data`` with a JSON
    content type is not a single JSON document.
    """
    _check_attributes(event_id, source, event_type, time, extensions)
    body: dict[str, object] = {
        "specversion": SPECVERSION,
        "id": event_id,
        "source": source,
        "type": event_type,
    }
    if time is not None:
        body["time"] = _format_time(time)
    if content_type is not None:
        body["datacontenttype"] = content_type
    body.update(extensions)
    if data:
        if _is_json(content_type):
            body["data"] = _checked_json(data)
        else:
            body["data_base64"] = base64.b64encode(data).decode("ascii")
    headers = [(CONTENT_TYPE_HEADER, STRUCTURED_CONTENT_TYPE.encode())]
    return EncodedEvent(msgspec.json.encode(body), headers)


def _wire_event(
    *,
    specversion: str | None,
    event_id: str | None,
    source: str | None,
    event_type: str | None,
    time: datetime | None,
    datacontenttype: str | None,
    data: msgspec.Raw,
    extensions: dict[str, str],
    timestamp_ms: int,
) -> WireEvent:
    specversion = _required("specversion", specversion)
    if specversion != SPECVERSION:
        raise InvalidEnvelopeError(
            f"invalid CloudEvent: specversion {specversion[:16]!r} is not supported, only 1.0"
        )
    event_id = _required("id", event_id)
    source = _required("source", source)
    event_type = _required("type", event_type)
    if len(event_type) > _MAX_TYPE_LENGTH:
        raise InvalidEnvelopeError(
            f"invalid CloudEvent: type is longer than {_MAX_TYPE_LENGTH} characters"
        )
    if len(source) > _MAX_SOURCE_LENGTH:
        raise InvalidEnvelopeError(
            f"invalid CloudEvent: source is longer than {_MAX_SOURCE_LENGTH} characters"
        )
    if not source.isprintable():
        # keeps IDENTITY_SEPARATOR (a control character) out of source + id identities
        raise InvalidEnvelopeError("invalid CloudEvent: source has control characters")
    return WireEvent(
        event_id=event_id,
        event_type=event_type,
        event_timestamp=time if time is not None else _record_time(timestamp_ms),
        source_service=source,
        correlation_id=extensions.get("correlationid") or event_id,
        data=data,
        metadata=extensions or None,
        specversion=SPECVERSION,
        datacontenttype=datacontenttype,
    )


def _required(name: str, value: str | None) -> str:
    if not value:
        raise InvalidEnvelopeError(
            f"invalid CloudEvent: required attribute {name!r} is missing or empty"
        )
    return value


def _header_text(name: str, raw: bytes | None) -> str:
    # transports may hand over a header without a value, whatever the type says
    if raw is None:
        raise InvalidEnvelopeError(f"invalid CloudEvent: header {name!r} has no value")
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise InvalidEnvelopeError(f"invalid CloudEvent: header {name!r} is not UTF-8") from None


def _parse_time(text: str) -> datetime:
    try:
        return msgspec.convert(text, UtcTimestamp)
    except msgspec.ValidationError as exc:
        raise InvalidEnvelopeError(f"invalid CloudEvent: attribute 'time': {exc}") from None


def _record_time(timestamp_ms: int) -> datetime:
    try:
        return _EPOCH + timedelta(milliseconds=timestamp_ms)
    except OverflowError:
        raise InvalidEnvelopeError(
            f"invalid CloudEvent: no time and record timestamp {timestamp_ms} is out of range"
        ) from None


def _extension_text(name: str, raw: msgspec.Raw) -> str | None:
    try:
        value = _extension_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise InvalidEnvelopeError(
            f"invalid CloudEvent: attribute {name[:32]!r} must be a string, integer or boolean"
            f" ({exc})"
        ) from None
    except (msgspec.DecodeError, UnicodeDecodeError):
        # msgspec before 0.23 raised UnicodeDecodeError for bad UTF-8 in a string, later
        # versions a DecodeError; the value already parsed as JSON, so that is all it can be
        raise UndecodableRecordError(
            f"undecodable record: attribute {name[:32]!r} is not UTF-8"
        ) from None
    if value is None:
        # the JSON format reads a null attribute as an absent one
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _structured_data(event: _StructuredEvent) -> msgspec.Raw:
    has_data = len(event.data) > 0 and event.data != _NULL
    if event.data_base64 is None:
        return event.data if has_data else _NULL
    if has_data:
        raise InvalidEnvelopeError("invalid CloudEvent: both data and data_base64 are set")
    try:
        return msgspec.Raw(base64.b64decode(event.data_base64, validate=True))
    except ValueError:
        raise UndecodableRecordError("undecodable record: data_base64 is not base64") from None


def _check_attributes(
    event_id: str,
    source: str,
    event_type: str,
    time: datetime | None,
    extensions: Mapping[str, str],
) -> None:
    for name, value in (("id", event_id), ("source", source), ("type", event_type)):
        if not value:
            raise ValueError(f"CloudEvent attribute {name!r} must not be empty")
    if time is not None and time.utcoffset() is None:
        raise ValueError("CloudEvent time must be timezone-aware")
    for name in extensions:
        if name in _CONTEXT_ATTRIBUTES or not _EXTENSION_NAME.fullmatch(name):
            raise ValueError(
                f"CloudEvent extension name {name!r} must be lowercase letters and digits "
                "and not a context attribute"
            )


def _format_time(time: datetime) -> str:
    text = time.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        # the JSON event format reads a missing datacontenttype as application/json
        return True
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type in (JSON_CONTENT_TYPE, "text/json") or media_type.endswith("+json")


def _checked_json(data: bytes) -> msgspec.Raw:
    try:
        return _json_checker.decode(data)
    except msgspec.DecodeError as exc:
        raise ValueError(f"CloudEvent data is not JSON but its content type is: {exc}") from None
    except RecursionError:
        raise ValueError("CloudEvent data is JSON nested too deep to decode") from None
