"""Routing: find the handler of a record, from a header when it names the type."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, NamedTuple

from eventkit.errors import InvalidEnvelopeError, UnroutableEventError

if TYPE_CHECKING:
    from eventkit.codecs.payload import EnvelopeDecoder
    from eventkit.codecs.reader import EnvelopeReader
    from eventkit.delivery import Delivery
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


class RouteTable:
    """Topic -> event type -> ``Route``; resolves a delivery at most once."""

    __slots__ = ("_reader", "_table", "_unknown")

    def __init__(
        self,
        table: dict[str, dict[str, Route]],
        reader: EnvelopeReader,
        unknown: UnknownEventPolicy,
    ) -> None:
        self._table = table
        self._reader = reader
        self._unknown = unknown

    def resolve(self, delivery: Delivery) -> Route | None:
        """The route of ``delivery``, or ``None`` to skip it; routed records leave decoded.

        The type comes from the ``event_type`` (or ``ce_type``) header when there is one, so
        unhandled events are skipped without decoding; otherwise from the decoded envelope.
        A routed record leaves with its envelope decoded and, where the route has a one-pass
        decoder and the header named the type, its payload too. Raises ``PoisonRecordError``
        for records out of bounds or undecodable, and for unknown types set to dead-letter.
        Resolving a delivery again reuses what was decoded.
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
        if delivery.event is not None:
            return route
        if route.envelope_decoder is not None and not binary:
            typed = reader.decode_typed(record, route.envelope_decoder)
            if typed is not None:
                if typed.event_type != event_type:
                    raise mismatch(event_type, typed.event_type)
                delivery.event = typed
                delivery.payload = typed.data
                delivery.decoded = True
                return route
        delivery.event = reader.decode(record, binary=binary)
        return route


def mismatch(header_type: str | None, body_type: str) -> InvalidEnvelopeError:
    """The error of a record whose routing header and envelope name different types."""
    return InvalidEnvelopeError(
        f"event_type header {str(header_type)[:256]!r} does not match the envelope's "
        f"{body_type[:256]!r}"
    )
