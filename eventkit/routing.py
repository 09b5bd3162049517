"""``Router``, the ``@handler`` decorator and ``HandlerSpec``: what runs for which event."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from eventkit.codecs.payload import (
    EnvelopeDecoder,
    PayloadDecoder,
    build_envelope_decoder,
    build_payload_decoder,
)
from eventkit.errors import ConfigurationError, DuplicateHandlerError
from eventkit.signature import HandlerFunc, HandlerSignature, inspect_handler

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from eventkit.retry import RetryPolicy

F = TypeVar("F", bound=HandlerFunc)


E = TypeVar("E", bound=enum.Enum)


def parse_enum(kind: type[E], value: E | str, setting: str) -> E:
    """An enum member from itself or its value; anything else names the valid values."""
    try:
        return kind(value)
    except ValueError:
        valid = ", ".join(repr(member.value) for member in kind)
        raise ConfigurationError(f"{setting} must be one of {valid}, not {value!r}") from None


class Ordering(enum.Enum):
    """How records of one partition may run concurrently."""

    #: one record at a time per partition (the default)
    PARTITION = "partition"
    #: the same key in order, different keys in parallel, within a partition
    KEY = "key"


@dataclass(frozen=True, slots=True)
class HandlerOptions:
    """Per-handler policies; ``None`` means the app's default."""

    retry: RetryPolicy | None = None
    idempotent: bool | None = None
    idempotency_ttl: float | None = None
    timeout: float | None = None
    ordering: Ordering | None = None
    #: staged Redis writes applied with DONE, deterministic ids for published events
    atomic_effects: bool = False
    #: run without the store's protection while it is unreachable, instead of waiting
    fail_open: bool = False

    def __post_init__(self) -> None:
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigurationError("handler timeout must be positive")
        if self.idempotency_ttl is not None and self.idempotency_ttl <= 0:
            raise ConfigurationError("handler idempotency_ttl must be positive")
        if self.atomic_effects and self.idempotent is not True:
            raise ConfigurationError(
                "atomic_effects=True applies a handler's writes with its DONE mark, so it "
                "needs idempotency on for that handler (idempotent=True)"
            )
        if self.fail_open and self.idempotent is False:
            raise ConfigurationError("fail_open=True only changes idempotency: it needs it on")
        if self.fail_open and self.atomic_effects:
            raise ConfigurationError(
                "fail_open=True cannot go with atomic_effects=True: staged writes need the store"
            )


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """One registered handler: its route, its signature, its payload decoder and options."""

    topic: str
    event_type: str
    func: HandlerFunc
    signature: HandlerSignature
    decoder: PayloadDecoder | None
    options: HandlerOptions
    #: decodes envelope and payload in one pass, for payload types msgspec reads natively
    envelope_decoder: EnvelopeDecoder | None = None

    @property
    def name(self) -> str:
        return f"{self.func.__module__}.{self.func.__qualname__}"


class Router:
    """A group of handlers, usually one module's; include it into the app.

    ``topic`` is the default topic of the handlers registered here.
    """

    def __init__(self, *, topic: str | None = None) -> None:
        self._default_topic = topic
        self._specs: dict[tuple[str, str], HandlerSpec] = {}

    def handler(
        self,
        event_type: str,
        *,
        topic: str | None = None,
        retry: RetryPolicy | None = None,
        idempotent: bool | None = None,
        idempotency_ttl: float | None = None,
        timeout: float | None = None,
        ordering: Ordering | str | None = None,
        atomic_effects: bool = False,
        fail_open: bool = False,
    ) -> Callable[[F], F]:
        """Register the decorated async function for ``event_type`` on ``topic``.

        ``atomic_effects=True`` (atomic-effect mode, ``docs/atomic-effects.md``): the
        handler stages Redis writes on a ``RedisEffects`` parameter and they are applied
        with its DONE mark as one unit; events it publishes get deterministic ids. It turns
        idempotency on for the handler, whatever the app's default; ``idempotent=False``
        with it is an error.

        ``fail_open=True``: while the idempotency store is unreachable, the handler runs
        without its protection (no claim, no start count, no DONE mark) instead of waiting
        with its partition paused (fail-closed, the default). Only the store calls fail
        open; the handler is never called again because the store failed.

        Fails at once (at import time) with ``DuplicateHandlerError`` when the
        ``(topic, event_type)`` pair is already taken, and with ``ConfigurationError`` when
        the signature or options are unusable.
        """
        route_topic = topic or self._default_topic
        if not route_topic:
            raise ConfigurationError(f"handler for {event_type!r} needs a topic")
        if not event_type:
            raise ConfigurationError("event_type must not be empty")
        if not event_type.isprintable():
            raise ConfigurationError(f"event_type {event_type!r} has control characters")
        if atomic_effects and idempotent is None:
            # the writes ride on the DONE mark: an app-wide idempotency=False cannot drop it
            idempotent = True
        options = HandlerOptions(
            retry=retry,
            idempotent=idempotent,
            idempotency_ttl=idempotency_ttl,
            timeout=timeout,
            ordering=parse_enum(Ordering, ordering, "ordering") if ordering is not None else None,
            atomic_effects=atomic_effects,
            fail_open=fail_open,
        )

        def register(func: F) -> F:
            signature = inspect_handler(func)
            if signature.wants_effects and not atomic_effects:
                raise ConfigurationError(
                    f"handler {func.__qualname__} takes RedisEffects, which only an "
                    "atomic-effect handler receives: register it with atomic_effects=True"
                )
            payload_type = signature.payload_type
            decoder = envelope_decoder = None
            if payload_type is not None:
                decoder = build_payload_decoder(payload_type)
                envelope_decoder = build_envelope_decoder(payload_type)
            self._add(
                HandlerSpec(
                    route_topic, event_type, func, signature, decoder, options, envelope_decoder
                )
            )
            return func

        return register

    def include_router(self, router: Router) -> None:
        """Add every handler of ``router``; a route taken on both sides is an error."""
        for spec in router:
            self._add(spec)

    def _add(self, spec: HandlerSpec) -> None:
        route = (spec.topic, spec.event_type)
        existing = self._specs.get(route)
        if existing is not None:
            raise DuplicateHandlerError(
                f"{spec.event_type!r} on topic {spec.topic!r} is handled by {existing.name} "
                f"already; {spec.name} cannot be registered for it too"
            )
        self._specs[route] = spec

    def __iter__(self) -> Iterator[HandlerSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def topics(self) -> frozenset[str]:
        """Every topic some handler listens on."""
        return frozenset(topic for topic, _ in self._specs)

    def spec_for(self, topic: str, event_type: str) -> HandlerSpec | None:
        """The handler registered for the pair, if any."""
        return self._specs.get((topic, event_type))

    def routes(self) -> dict[str, dict[str, HandlerSpec]]:
        """The routing table: topic -> event type -> handler."""
        table: dict[str, dict[str, HandlerSpec]] = {}
        for (topic, event_type), spec in self._specs.items():
            table.setdefault(topic, {})[event_type] = spec
        return table
