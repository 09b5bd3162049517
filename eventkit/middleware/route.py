"""``route``: find the handler of a record, from a header when it names the type."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from eventkit.errors import UnroutableEventError
from eventkit.outcomes import Outcome

if TYPE_CHECKING:
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


class RouteTable:
    """Topic -> event type -> (handler, its chain); resolves a delivery at most once."""

    __slots__ = ("_reader", "_table", "_unknown")

    def __init__(
        self,
        table: dict[str, dict[str, tuple[HandlerSpec, Next]]],
        reader: EnvelopeReader,
        unknown: UnknownEventPolicy,
    ) -> None:
        self._table = table
        self._reader = reader
        self._unknown = unknown

    def resolve(self, delivery: Delivery) -> tuple[HandlerSpec, Next] | None:
        """The handler and chain of ``delivery``, or ``None`` to skip it.

        The type comes from the ``event_type`` (or ``ce_type``) header when there is one, so
        unhandled events are skipped without decoding; otherwise from the decoded envelope.
        A routed record leaves with its envelope decoded (``data`` still raw). Raises
        ``PoisonRecordError`` for records out of bounds or undecodable, and for unknown
        types set to dead-letter. Resolving a delivery again reuses what was decoded.
        """
        record = delivery.record
        binary = False
        event_type = delivery.event_type
        if event_type is None or delivery.event is None:
            event_type, binary = self._reader.scan(record.headers)
            if event_type is None:
                event = delivery.event = self._reader.decode(record, binary=binary)
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
        if delivery.event is None:
            delivery.event = self._reader.decode(record, binary=binary)
        delivery.spec = route[0]
        return route

    def dispatch(self) -> Next:
        """The end of the outer chain: run the handler's chain, or skip."""
        resolve = self.resolve

        async def run(delivery: Delivery) -> Outcome:
            route = resolve(delivery)
            if route is None:
                return Outcome.SKIPPED
            return await route[1](delivery)

        return run
