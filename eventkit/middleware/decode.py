"""The decode step: the handler's typed payload, from the envelope routing decoded."""

from __future__ import annotations

from typing import TYPE_CHECKING

from eventkit.middleware.route import mismatch

if TYPE_CHECKING:
    from eventkit.delivery import Delivery
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
        raise mismatch(delivery.event_type, event.event_type)
    decoder = spec.decoder
    if decoder is not None:
        delivery.payload = decoder(event.data)
    delivery.decoded = True
