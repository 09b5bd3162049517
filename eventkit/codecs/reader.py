"""``EnvelopeReader``: bounds, format detection and envelope decoding of one raw record."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from eventkit.codecs import cloudevents
from eventkit.codecs.limits import DecodeLimits
from eventkit.codecs.wire import WireEvent
from eventkit.errors import InvalidEnvelopeError, OversizedRecordError, UndecodableRecordError

if TYPE_CHECKING:
    from eventkit.ports import Headers, Record

EVENT_TYPE_HEADER = "event_type"


class _SpecVersionProbe(msgspec.Struct):
    specversion: str | None = None


_wire_decoder = msgspec.json.Decoder(WireEvent)
_probe_decoder = msgspec.json.Decoder(_SpecVersionProbe)


class EnvelopeReader:
    """Turns a raw record into a ``WireEvent`` or raises a ``PoisonRecordError``.

    Binary CloudEvents are recognised by the ``ce_specversion`` header; structured ones by a
    ``specversion`` member in the body, whatever the content-type header says; everything else
    is read as the eventkit JSON envelope.
    """

    __slots__ = ("_limits",)

    def __init__(self, limits: DecodeLimits | None = None) -> None:
        self._limits = limits or DecodeLimits()

    @property
    def limits(self) -> DecodeLimits:
        return self._limits

    def scan(self, headers: Headers) -> tuple[str | None, bool]:
        """Check the header bounds and read, in one pass, the routing type and the format.

        Returns the event type a header names (``event_type``, or ``ce_type``), if any, and
        whether the record is a binary-mode CloudEvent (a ``ce_specversion`` header).
        Raises ``OversizedRecordError`` when there are too many headers or header bytes.
        """
        if not headers:
            return None, False
        limits = self._limits
        if len(headers) > limits.max_header_count:
            raise OversizedRecordError(
                f"record has {len(headers)} headers, over the limit of {limits.max_header_count}"
            )
        size = 0
        type_header: bytes | None = None
        binary = False
        for name, value in headers:
            size += len(name) + len(value or b"")
            if name == EVENT_TYPE_HEADER or name == cloudevents.TYPE_HEADER:  # noqa: PLR1714 - two compares beat a tuple lookup here
                if type_header is None:
                    type_header = value
            elif name == cloudevents.SPECVERSION_HEADER:
                binary = True
        if size > limits.max_header_bytes:
            raise OversizedRecordError(
                f"record headers hold {size} bytes, over the limit of {limits.max_header_bytes}"
            )
        if type_header is None:
            return None, binary
        try:
            return type_header.decode(), binary
        except UnicodeDecodeError:
            return None, binary

    def read(self, record: Record) -> WireEvent:
        """Check bounds, detect the format and decode the envelope with ``data`` left raw."""
        return self.decode(record, binary=self.scan(record.headers)[1])

    def decode(self, record: Record, *, binary: bool) -> WireEvent:
        """Decode a record whose headers ``scan`` already checked; ``data`` is left raw."""
        value = record.value
        if value is None:
            raise UndecodableRecordError("record has no value (a tombstone)")
        if len(value) > self._limits.max_record_bytes:
            raise OversizedRecordError(
                f"record value is {len(value)} bytes, over the limit of "
                f"{self._limits.max_record_bytes}"
            )
        if binary:
            event = cloudevents.decode_binary(value, record.headers, record.timestamp)
        else:
            event = self._decode_body(value, record.timestamp)
        self._check_event_id(event.event_id)
        return event

    def _decode_body(self, value: bytes, timestamp_ms: int) -> WireEvent:
        try:
            event = _wire_decoder.decode(value)
        except msgspec.ValidationError as exc:
            if self._has_specversion(value):
                return cloudevents.decode_structured(value, timestamp_ms)
            raise InvalidEnvelopeError(f"invalid envelope: {exc}") from None
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            # msgspec raises UnicodeDecodeError, not DecodeError, for bad UTF-8 in a string
            raise UndecodableRecordError(f"undecodable record: {exc}") from None
        except RecursionError:
            # msgspec raises RecursionError, not DecodeError, on very deep input
            raise UndecodableRecordError("undecodable record: JSON nested too deep") from None
        if event.specversion is not None:
            # a specversion member makes it a structured CloudEvent, whatever the content type
            return cloudevents.decode_structured(value, timestamp_ms)
        return event

    @staticmethod
    def _has_specversion(value: bytes) -> bool:
        try:
            return _probe_decoder.decode(value).specversion is not None
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            return False

    def _check_event_id(self, event_id: str) -> None:
        # a str method check is several times cheaper than a regex constraint in the decoder
        if not (event_id.isascii() and event_id.isprintable()) or " " in event_id:
            raise InvalidEnvelopeError(
                "invalid envelope: event_id must be visible ASCII without spaces"
            )
        if len(event_id) > self._limits.max_event_id_length:
            raise InvalidEnvelopeError(
                f"invalid envelope: event_id is longer than {self._limits.max_event_id_length}"
            )
