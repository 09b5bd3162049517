"""The end of every chain: call the handler with the arguments its signature asked for."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eventkit.context import EventContext
from eventkit.envelope import EventEnvelope
from eventkit.outcomes import Outcome
from eventkit.signature import ParamKind

if TYPE_CHECKING:
    from collections.abc import Callable

    from eventkit.delivery import Delivery
    from eventkit.pipeline import Next
    from eventkit.publisher import EventPublisher
    from eventkit.routing import HandlerSpec


def envelope_of(delivery: Delivery) -> EventEnvelope[Any]:
    """The handler-facing envelope of a decoded delivery, with its typed payload."""
    event = delivery.event
    assert event is not None, "envelopes exist only after decoding"
    return EventEnvelope(
        event_type=event.event_type,
        data=delivery.payload,
        source_service=event.source_service,
        event_id=event.event_id,
        event_timestamp=event.event_timestamp,
        correlation_id=event.correlation_id,
        schema_version=event.schema_version,
        metadata=event.metadata,
    )


def invoker(spec: HandlerSpec, publisher: EventPublisher | None) -> Next:
    """A ``Next`` that calls the handler; built once per handler, specialised by signature."""
    func = spec.func
    kinds = tuple(param.kind for param in spec.signature.params)
    keyword_only = any(param.keyword_only for param in spec.signature.params)

    # the common shapes get a direct call; the general one builds its arguments per record
    if kinds == (ParamKind.PAYLOAD,) and not keyword_only:

        async def call_payload(delivery: Delivery) -> Outcome:
            await func(delivery.payload)
            return Outcome.HANDLED

        return call_payload

    if kinds == (ParamKind.PAYLOAD, ParamKind.CONTEXT) and not keyword_only:

        async def call_payload_context(delivery: Delivery) -> Outcome:
            await func(delivery.payload, EventContext(delivery, publisher))
            return Outcome.HANDLED

        return call_payload_context

    getters: dict[ParamKind, Callable[[Delivery], Any]] = {
        ParamKind.PAYLOAD: lambda delivery: delivery.payload,
        ParamKind.ENVELOPE: envelope_of,
        ParamKind.CONTEXT: lambda delivery: EventContext(delivery, publisher),
    }
    positional = tuple(
        getters[param.kind] for param in spec.signature.params if not param.keyword_only
    )
    named = tuple(
        (param.name, getters[param.kind]) for param in spec.signature.params if param.keyword_only
    )

    async def call_general(delivery: Delivery) -> Outcome:
        args = [get(delivery) for get in positional]
        kwargs = {name: get(delivery) for name, get in named}
        await func(*args, **kwargs)
        return Outcome.HANDLED

    return call_general
