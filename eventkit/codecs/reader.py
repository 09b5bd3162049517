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
CE_TYPE_HEADER = cloudevents.TYPE_HEADER
CE_SPECVERSION_HEADER = cloudevents.SPECVERSION_HEADER
#: Header a replayed dead letter carries; it may claim a key done as dead-lettered, once.
REPLAY_ID_HEADER = "replay_id"
#: Every header the scan reads: one set lookup passes over the others.
READ_HEADERS = frozenset(
    {EVENT_TYPE_HEADER, CE_TYPE_HEADER, CE_SPECVERSION_HEADER, REPLAY_ID_HEADER}
)


class _SpecVersionProbe(msgspec.Struct):
    specversion: str | None = None


#: Decodes an eventkit envelope with ``data`` raw; no bound or check of its own.
decode_wire = msgspec.json.Decoder(WireEvent).decode
_probe_decoder = msgspec.json.Decoder(_SpecVersionProbe)


class EnvelopeReader:
    """Turns a raw record into a ``WireEvent`` or raises a ``PoisonRecordError``.

    Binary CloudEvents are recognised by the ``ce_specversion`` header; structured ones by a
    ``specversion`` member in the body, whatever the content-type header says; everything else
    is read as the eventkit JSON envelope.
    """

    __slots__ = ("_limits", "_max_event_id", "_max_header_bytes", "_max_headers", "_max_value")

    def __init__(self, limits: DecodeLimits | None = None) -> None:
        self._limits = limits = limits or DecodeLimits()
        # plain ints in slots: one attribute lookup each on the per-record path
        self._max_value = limits.max_record_bytes
        self._max_headers = limits.max_header_count
        self._max_header_bytes = limits.max_header_bytes
        self._max_event_id = limits.max_event_id_length

    @property
    def limits(self) -> DecodeLimits:
        return self._limits

    def scan(self, headers: Headers) -> tuple[str | None, bool, str | None]:
        """Check the header bounds and read, in one pass, what the headers say.

        Returns the event type a header names (``event_type``, or ``ce_type``), if any;
        whether the record is a binary-mode CloudEvent (a ``ce_specversion`` header); and
        the replay id of a replayed dead letter (a ``replay_id`` header), if any.
        Raises ``OversizedRecordError`` when there are too many headers or header bytes.
        """
        if not headers:
            return None, False, None
        if len(headers) > self._max_headers:
            raise OversizedRecordError(
                f"record has {len(headers)} headers, over the limit of {self._max_headers}"
            )
        size = 0
        type_header: bytes | None = None
        replay: bytes | None = None
        binary = False
        try:
            for name, value in headers:
                size += len(name) + len(value)
                if name in READ_HEADERS:
                    if name == CE_SPECVERSION_HEADER:
                        binary = True
                    elif name == REPLAY_ID_HEADER:
                        replay = value
                    elif type_header is None:
                        type_header = value
        except TypeError:
            # a header with a null value: count it as empty (rare, so off the fast path)
            return self.scan([(name, value or b"") for name, value in headers])
        if size > self._max_header_bytes:
            raise OversizedRecordError(
                f"record headers hold {size} bytes, over the limit of {self._max_header_bytes}"
            )
        replay_id = replay.decode("utf-8", "replace") if replay is not None else None
        if type_header is None:
            return None, binary, replay_id
        try:
            return type_header.decode(), binary, replay_id
        except UnicodeDecodeError:
            return None, binary, replay_id

    def read(self, record: Record) -> WireEvent:
        """Check bounds, detect the format and decode the envelope with ``data`` left raw."""
        return self.decode(record, binary=self.scan(record.headers)[1])

    def decode(self, record: Record, *, binary: bool) -> WireEvent:
        """Decode a record whose headers ``scan`` already checked; ``data`` is left raw.

        Raises ``PoisonRecordError``: ``UndecodableRecordError`` (a tombstone, not JSON, bad
        UTF-8, nested too deep), ``OversizedRecordError``, or ``InvalidEnvelopeError``
        (fields missing or of the wrong type, an ``event_id`` that is not visible ASCII).
        """
        value = record.value
        if value is None:
            raise UndecodableRecordError("record has no value (a tombstone)")
        if len(value) > self._max_value:
            raise OversizedRecordError(
                f"record value is {len(value)} bytes, over the limit of {self._max_value}"
            )
        if binary:
            event = cloudevents.decode_binary(value, record.headers, record.timestamp)
        else:
            try:
                event = decode_wire(value)
            except msgspec.ValidationError as exc:
                event = self._not_an_envelope(value, record.timestamp, exc)
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                # msgspec raises UnicodeDecodeError, not DecodeError, for bad UTF-8 in a string
                raise UndecodableRecordError(f"undecodable record: {exc}") from None
            except RecursionError:
                # msgspec raises RecursionError, not DecodeError, on very deep input
                raise UndecodableRecordError("undecodable record: JSON nested too deep") from None
            if event.specversion is not None:
                # a specversion member makes it a structured CloudEvent, whatever the content type
                event = cloudevents.decode_structured(value, record.timestamp)
        event_id = event.event_id
        # str methods are several times cheaper than a regex constraint in the decoder
        if (
            not event_id.isascii()
            or not event_id.isprintable()
            or " " in event_id
            or len(event_id) > self._max_event_id
        ):
            raise InvalidEnvelopeError(
                f"invalid envelope: event_id must be 1 to {self._max_event_id} visible ASCII "
                "characters without spaces"
            )
        return event

    def _not_an_envelope(
        self, value: bytes, timestamp_ms: int, error: msgspec.ValidationError
    ) -> WireEvent:
        """A body that is no eventkit envelope may still be a structured CloudEvent."""
        if self._has_specversion(value):
            return cloudevents.decode_structured(value, timestamp_ms)
        raise InvalidEnvelopeError(f"invalid envelope: {error}") from None

    @staticmethod
    def _has_specversion(value: bytes) -> bool:
        try:
            return _probe_decoder.decode(value).specversion is not None
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            return False
