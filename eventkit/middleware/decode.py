"""``decode``: the handler's typed payload, from the envelope routing decoded."""

from __future__ import annotations

from typing import TYPE_CHECKING

from eventkit.errors import InvalidEnvelopeError

if TYPE_CHECKING:
    from eventkit.delivery import Delivery
    from eventkit.outcomes import Outcome
    from eventkit.pipeline import Middleware, Next
    from eventkit.routing import HandlerSpec


def decode_delivery(delivery: Delivery, spec: HandlerSpec) -> None:
    """Decode the payload of a routed delivery once; later calls return at once.

    Raises ``PoisonRecordError`` (the record is dead-lettered) when the envelope's type
    disagrees with the routing header or the payload does not fit the handler's type.
    """
    if delivery.decoded:
        return
    event = delivery.event
    assert event is not None, "routing decodes the envelope"
    if event.event_type != delivery.event_type:
        raise InvalidEnvelopeError(
            f"event_type header {str(delivery.event_type)[:256]!r} does not match the "
            f"envelope's {event.event_type[:256]!r}"
        )
    decoder = spec.decoder
    if decoder is not None:
        delivery.payload = decoder(event.data)
    delivery.decoded = True


def decode(spec: HandlerSpec) -> Middleware:
    """Decode each record's payload for ``spec`` before the rest of its chain runs."""

    def wrap(next_: Next) -> Next:
        async def run(delivery: Delivery) -> Outcome:
            decode_delivery(delivery, spec)
            return await next_(delivery)

        return run

    return wrap
