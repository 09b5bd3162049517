"""The end of every chain: call the handler with the arguments its signature asked for."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from eventkit.context import EventContext
from eventkit.envelope import EventEnvelope
from eventkit.idempotency.effects import effects_for
from eventkit.outcomes import Outcome
from eventkit.signature import ParamKind

if TYPE_CHECKING:
    from eventkit.delivery import Delivery
    from eventkit.pipeline import Next
    from eventkit.publisher import EventPublisher
    from eventkit.routing import HandlerSpec

HandlerCall = Callable[["Delivery"], Awaitable[Any]]


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


def handler_call(spec: HandlerSpec, publisher: EventPublisher | None) -> HandlerCall:
    """Start the handler with its arguments; built once per handler, shaped by its signature.

    Returns the handler's awaitable without awaiting it, so the caller adds no coroutine.
    """
    func = spec.func
    params = spec.signature.params
    kinds = tuple(param.kind for param in params)
    keyword_only = any(param.keyword_only for param in params)
    atomic = spec.options.atomic_effects

    # the common shapes get a direct call; the general one builds its arguments per record
    if kinds == (ParamKind.PAYLOAD,) and not keyword_only:
        return lambda delivery: func(delivery.payload)
    if kinds == (ParamKind.PAYLOAD, ParamKind.CONTEXT) and not keyword_only and not atomic:
        return lambda delivery: func(delivery.payload, EventContext(delivery, publisher))

    getters: dict[ParamKind, Callable[[Delivery], Any]] = {
        ParamKind.PAYLOAD: lambda delivery: delivery.payload,
        ParamKind.ENVELOPE: envelope_of,
        # a context per attempt: its publish count restarts, so retried ids repeat
        ParamKind.CONTEXT: lambda delivery: EventContext(
            delivery, publisher, deterministic_ids=atomic
        ),
        ParamKind.EFFECTS: effects_for,
    }
    positional = tuple(getters[param.kind] for param in params if not param.keyword_only)
    named = tuple((param.name, getters[param.kind]) for param in params if param.keyword_only)

    def call_general(delivery: Delivery) -> Awaitable[Any]:
        args = [get(delivery) for get in positional]
        kwargs = {name: get(delivery) for name, get in named}
        return func(*args, **kwargs)

    return call_general


def invoker(call: HandlerCall) -> Next:
    """A ``Next`` that awaits the handler and reports ``HANDLED``."""
    handled = Outcome.HANDLED

    async def invoke(delivery: Delivery) -> Outcome:
        await call(delivery)
        return handled

    return invoke
