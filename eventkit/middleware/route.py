"""Routing: find the handler of a record, from a header when it names the type."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, NamedTuple

import msgspec

from eventkit.codecs.reader import EVENT_TYPE_HEADER, decode_wire
from eventkit.codecs.reader import READ_HEADERS as _READ_HEADERS
from eventkit.codecs.wire import MAX_EVENT_ID_LENGTH
from eventkit.errors import InvalidEnvelopeError, UnroutableEventError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from eventkit.codecs.payload import EnvelopeDecoder
    from eventkit.codecs.reader import EnvelopeReader
    from eventkit.delivery import Delivery
    from eventkit.invoke import HandlerCall
    from eventkit.outcomes import Outcome
    from eventkit.pipeline import Next
    from eventkit.routing import HandlerSpec


class UnknownEventPolicy(enum.Enum):
    """What happens to an event type no handler is registered for."""

    #: finish the record as ``SKIPPED`` and count it (the default)
    SKIP = "skip"
    #: send it to the dead-letter topic as ``unroutable``
    DEAD_LETTER = "dead_letter"


class Route(NamedTuple):
    """Where one (topic, event type) goes: the handler, its chain, and a one-pass decoder."""

    spec: HandlerSpec
    chain: Next
    #: decodes envelope and payload at once; ``None`` where ``data`` must stay raw
    envelope_decoder: EnvelopeDecoder | None
    #: set where the chain is only the retry step around the handler
    direct: DirectCall | None = None
    #: whether the handler's records are claimed in the idempotency store
    idempotent: bool = False


class DirectCall(NamedTuple):
    """The retry step around the handler in parts, so the step before it can make the
    first attempt itself: a coroutine less per record."""

    #: the handler call
    call: HandlerCall
    #: the retry step's continuation after the first attempt raised
    after_failure: Callable[[Delivery, Exception], Awaitable[Outcome]]
    #: the retry policy's attempts; a delivery that has made them all is the step's to settle
    max_attempts: int


class RouteTable:
    """Topic -> event type -> ``Route``; resolves a delivery at most once."""

    __slots__ = (
        "_by_header",
        "_max_event_id",
        "_max_header_bytes",
        "_max_headers",
        "_max_value",
        "_reader",
        "_table",
        "_unknown",
    )

    def __init__(
        self,
        table: dict[str, dict[str, Route]],
        reader: EnvelopeReader,
        unknown: UnknownEventPolicy,
    ) -> None:
        self._table = table
        self._reader = reader
        self._unknown = unknown
        # the routes keyed by the raw ``event_type`` header value, which saves decoding it
        self._by_header = {
            topic: {event_type.encode(): route for event_type, route in by_type.items()}
            for topic, by_type in table.items()
        }
        limits = reader.limits
        self._max_value = limits.max_record_bytes
        self._max_headers = limits.max_header_count
        self._max_header_bytes = limits.max_header_bytes
        # the decoder's own bound on event_id makes a check against a larger limit moot
        max_event_id = limits.max_event_id_length
        self._max_event_id = max_event_id if max_event_id < MAX_EVENT_ID_LENGTH else None

    # one flat function on purpose: each early return hands the record to ``resolve``
    def fast(self, delivery: Delivery) -> Route | None:  # noqa: PLR0911, PLR0912
        """The route of the common record, decoded, or ``None`` to ``resolve`` it instead.

        The common record names its type in an ``event_type`` header, carries no other header
        the routing reads, is within every bound and is an eventkit envelope of a routed type.
        For it this does what ``resolve`` and the decode step do, in one call (decoding in
        one pass where the route can); anything else (or anything wrong) is left to
        ``resolve``, which gives the precise outcome.
        """
        if delivery.event is not None:
            return None
        record = delivery.record
        headers = record.headers
        if not headers or len(headers) > self._max_headers:
            return None
        size = 0
        type_header: bytes | None = None
        try:
            for name, header_value in headers:
                size += len(name) + len(header_value)
                if name in _READ_HEADERS:
                    if name != EVENT_TYPE_HEADER:
                        return None  # a CloudEvent, a replay, or ce_type: resolve reads it
                    if type_header is None:
                        type_header = header_value
        except TypeError:
            return None  # a header with a null value
        if type_header is None or size > self._max_header_bytes:
            return None
        by_header = self._by_header.get(record.topic)
        if by_header is None:
            return None
        try:
            route = by_header.get(type_header)
        except TypeError:
            return None  # a header value of another type than bytes (unhashable)
        if route is None:
            return None
        value = record.value
        if value is None or len(value) > self._max_value:
            return None
        decode = route.envelope_decoder
        try:
            event = decode(value) if decode is not None else decode_wire(value)
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            return None
        spec = route.spec
        event_type = spec.event_type
        event_id = event.event_id
        if (
            event.event_type != event_type
            or event.specversion is not None
            or not event_id.isascii()
            or not event_id.isprintable()
            or " " in event_id
            or (self._max_event_id is not None and len(event_id) > self._max_event_id)
        ):
            return None
        if decode is not None:
            payload = event.data
        elif spec.decoder is not None:
            try:
                payload = spec.decoder(event.data)
            except Exception:  # the decode step raises it again, precisely
                return None
        else:
            payload = None
        delivery.event_type = event_type
        delivery.spec = spec
        delivery.route = route
        delivery.event = event
        delivery.payload = payload
        delivery.decoded = True
        return route

    def resolve(self, delivery: Delivery) -> Route | None:
        """The route of ``delivery``, or ``None`` to skip it; routed records leave decoded.

        The type comes from the ``event_type`` (or ``ce_type``) header when there is one, so
        unhandled events are skipped without decoding; otherwise from the decoded envelope.
        A routed record leaves with its envelope decoded (its payload is decoded by the decode
        step) and remembers its route, which it gets only once the envelope is decoded.
        Raises ``PoisonRecordError`` for records out of bounds or undecodable, and for unknown
        types set to dead-letter. Resolving a delivery again reuses what was decoded.
        """
        record = delivery.record
        reader = self._reader
        binary = False
        event_type = delivery.event_type
        if event_type is None or delivery.event is None:
            event_type, binary, delivery.replay_id = reader.scan(record.headers)
            if event_type is None:
                event = delivery.event = reader.decode(record, binary=binary)
                event_type = event.event_type
            delivery.event_type = event_type
        by_type = self._table.get(record.topic)
        route = by_type.get(event_type) if by_type is not None else None
        if route is None:
            if self._unknown is UnknownEventPolicy.DEAD_LETTER:
                raise UnroutableEventError(
                    f"no handler for event type {event_type[:256]!r} on topic {record.topic!r}"
                )
            return None
        delivery.spec = route.spec
        if delivery.event is None:
            delivery.event = reader.decode(record, binary=binary)
        # remembered only now: a delivery with a route always has its envelope
        delivery.route = route
        return route


def mismatch(header_type: str | None, body_type: str) -> InvalidEnvelopeError:
    """The error of a record whose routing header and envelope name different types."""
    return InvalidEnvelopeError(
        f"event_type header {str(header_type)[:256]!r} does not match the envelope's "
        f"{body_type[:256]!r}"
    )
