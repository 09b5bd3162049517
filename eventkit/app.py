"""``EventApp``: handlers, policies and middlewares, started over a consumer and a publisher."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from eventkit.clock import SystemClock
from eventkit.codecs.limits import DecodeLimits
from eventkit.deadletters import DeadLetterPublisher, default_dead_letter_topic
from eventkit.dispatcher import Dispatcher, build_dispatcher
from eventkit.errors import ConfigurationError, PublisherNotStartedError
from eventkit.idempotency.memory import InMemoryIdempotencyStore
from eventkit.idempotency.redis_settings import SCHEMES, RedisSettings
from eventkit.keys import namespace_for
from eventkit.middleware.route import UnknownEventPolicy
from eventkit.publisher import EventPublisher
from eventkit.retry import RetryPolicy
from eventkit.routing import HandlerSpec, Ordering, Router, parse_enum
from eventkit.transports.url import Transport, connect
from eventkit.worker import Worker, WorkerConfig

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import TypeAlias

    from eventkit.idempotency.redis_connect import RedisConnection
    from eventkit.middleware.observe import RecordObserver
    from eventkit.pipeline import Middleware
    from eventkit.ports import Clock, Consumer, IdempotencyStore, Publisher
    from eventkit.testing import TestBus

    #: What ``EventApp.start(store=...)`` accepts.
    StoreOption: TypeAlias = IdempotencyStore | RedisSettings | str | None

SEVEN_DAYS = 7 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class AppPolicies:
    """App-wide defaults that per-handler options override."""

    service: str
    unknown_event_types: UnknownEventPolicy = UnknownEventPolicy.SKIP
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    idempotency: bool = True
    idempotency_ttl: float = SEVEN_DAYS
    idempotency_ttls: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    lease_seconds: float = 30.0
    max_claim_chunk: int = 256
    limits: DecodeLimits = field(default_factory=DecodeLimits)

    def __post_init__(self) -> None:
        if not self.service:
            raise ConfigurationError("service must not be empty")
        if self.lease_seconds <= 0:
            raise ConfigurationError("lease_seconds must be positive")
        if self.idempotency_ttl <= 0:
            raise ConfigurationError("idempotency_ttl must be positive")
        if self.max_claim_chunk < 1:
            raise ConfigurationError("max_claim_chunk must be at least 1")
        for event_type, ttl in self.idempotency_ttls.items():
            if ttl <= 0:
                raise ConfigurationError(f"idempotency_ttls[{event_type!r}] must be positive")

    def idempotent(self, spec: HandlerSpec) -> bool:
        return self.idempotency if spec.options.idempotent is None else spec.options.idempotent

    def retry_for(self, spec: HandlerSpec) -> RetryPolicy:
        return spec.options.retry or self.retry

    def ttl_for(self, spec: HandlerSpec) -> float:
        """The done-TTL of a handler: its option, else the per-type override, else default."""
        if spec.options.idempotency_ttl is not None:
            return spec.options.idempotency_ttl
        return self.idempotency_ttls.get(spec.event_type, self.idempotency_ttl)


class EventApp(Router):
    """A service's event handlers and the policies around them.

    Register handlers with ``@app.handler(event_type, topic=...)`` or ``include_router``;
    run them with ``await app.start(...)`` / ``await app.stop()`` inside a host application,
    or test them with ``async with app.testing() as bus``.
    """

    def __init__(
        self,
        service: str,
        *,
        group_id: str | None = None,
        topic: str | None = None,
        unknown_event_types: UnknownEventPolicy | str = UnknownEventPolicy.SKIP,
        retry: RetryPolicy | None = None,
        idempotency: bool = True,
        idempotency_ttl: float = SEVEN_DAYS,
        idempotency_ttls: Mapping[str, float] | None = None,
        lease_seconds: float = 30.0,
        limits: DecodeLimits | None = None,
        dead_letter_topic: Callable[[str], str] = default_dead_letter_topic,
        worker: WorkerConfig | None = None,
    ) -> None:
        super().__init__(topic=topic)
        self.policies = AppPolicies(
            service=service,
            unknown_event_types=parse_enum(
                UnknownEventPolicy, unknown_event_types, "unknown_event_types"
            ),
            retry=retry or RetryPolicy(),
            idempotency=idempotency,
            idempotency_ttl=idempotency_ttl,
            idempotency_ttls=MappingProxyType(dict(idempotency_ttls or {})),
            lease_seconds=lease_seconds,
            limits=limits or DecodeLimits(),
        )
        self.group_id = group_id or f"{service}-consumer"
        self.dead_letter_topic = dead_letter_topic
        self.worker_config = worker or WorkerConfig()
        self._middlewares: list[Middleware] = []
        self._running: _Running | None = None

    @property
    def service(self) -> str:
        return self.policies.service

    def middleware(self, middleware: Middleware) -> Middleware:
        """Add a middleware; it runs after decoding, before idempotency, in the order added."""
        self._middlewares.append(middleware)
        return middleware

    def validate(self) -> None:
        """Check what can only be checked with every handler registered; raises at start-up."""
        if not len(self):
            raise ConfigurationError(f"app {self.service!r} has no handlers")
        registered = {spec.event_type for spec in self}
        unknown = sorted(set(self.policies.idempotency_ttls) - registered)
        if unknown:
            raise ConfigurationError(
                f"idempotency_ttls names event types no handler is registered for: {unknown}"
            )
        self.key_ordered_topics()

    def key_ordered_topics(self) -> frozenset[str]:
        """Topics whose partitions run key-ordered: every handler there says ``ordering="key"``.

        Lanes are per partition and ordering is per handler, so a topic mixing both orderings
        has no consistent lane: ``ConfigurationError`` naming the topic and its handlers.
        """
        keyed: set[str] = set()
        for topic, handlers in self.routes().items():
            orderings = {
                name: spec.options.ordering or Ordering.PARTITION
                for name, spec in sorted((spec.name, spec) for spec in handlers.values())
            }
            if len(set(orderings.values())) > 1:
                listed = ", ".join(
                    f"{name} ({ordering.value})" for name, ordering in orderings.items()
                )
                raise ConfigurationError(
                    f"topic {topic!r} mixes handler orderings; all handlers of a topic must "
                    f'say ordering="key", or none: {listed}'
                )
            if Ordering.KEY in orderings.values():
                keyed.add(topic)
        return frozenset(keyed)

    def dead_letter_topics(self) -> frozenset[str]:
        return frozenset(self.dead_letter_topic(topic) for topic in self.topics())

    def build(
        self,
        *,
        publisher: Publisher,
        store: IdempotencyStore | None,
        clock: Clock,
        rng: random.Random | None = None,
        observers: Sequence[RecordObserver] = (),
    ) -> Dispatcher:
        """Validate the app and assemble its record path over the given adapters."""
        self.validate()
        return build_dispatcher(
            self,
            self.policies,
            group_id=self.group_id,
            publisher=EventPublisher(publisher, source_service=self.service),
            dead_letters=DeadLetterPublisher(
                publisher,
                group_id=self.group_id,
                topic_for=self.dead_letter_topic,
                max_header_bytes=self.policies.limits.max_header_bytes,
            ),
            store=store,
            clock=clock,
            rng=rng or random.Random(),
            middlewares=self._middlewares,
            observers=observers,
        )

    def idempotent_handlers(self) -> list[str]:
        """The names of the handlers with idempotency on: they need an idempotency store."""
        return sorted(spec.name for spec in self if self.policies.idempotent(spec))

    async def start(
        self,
        transport: Transport | str | None = None,
        *,
        store: StoreOption,
        consumer: Consumer | None = None,
        publisher: Publisher | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        observers: Sequence[RecordObserver] = (),
    ) -> None:
        """Start publishing and consuming inside the running event loop; signals untouched.

        ``transport`` is a URL (``kafka://HOST:PORT``, ``memory://NAME``; see
        ``eventkit.transports.connect``) or a ``Transport``; its topic check runs before
        consuming (after the store's start-up checks), so a missing source or dead-letter
        topic fails here. Alternatively pass ``consumer`` and ``publisher`` directly (no
        topic check).

        ``store`` is the idempotency store:

        - a ``redis://`` or ``rediss://`` URL, or ``RedisSettings``: the app connects, runs
          the start-up checks (``eventkit.idempotency.redis_connect``; a failure is a
          ``ConfigurationError``) before consuming, and closes the connection in ``stop``
          and ``abort``, or at once if the start fails; ``app.redis`` is the connection;
        - ``"memory"``: a new ``InMemoryIdempotencyStore``, chosen explicitly (this process
          only: keys are lost on exit and not shared);
        - a store object, which the caller owns (opens and closes);
        - ``None`` or ``"none"``: allowed only when no handler is idempotent.
        """
        if self._running is not None:
            raise ConfigurationError(f"app {self.service!r} is running already")
        if isinstance(transport, str):
            transport = connect(transport, group_id=self.group_id)
        if transport is not None:
            if consumer is not None or publisher is not None:
                raise ConfigurationError("pass a transport or a consumer and publisher, not both")
            consumer, publisher = transport.consumer, transport.publisher
        if consumer is None or publisher is None:
            raise ConfigurationError("start() needs a transport, or a consumer and a publisher")
        clock = clock or SystemClock()
        chosen = _store_choice(store, clock)
        if chosen is None and self.idempotent_handlers():
            raise ConfigurationError(
                f"idempotency is on for {self.idempotent_handlers()} but no idempotency store "
                'was given; pass store= a redis:// URL (or "memory", explicitly), or turn '
                "idempotency off (idempotency=False) explicitly"
            )
        # a bad app fails before any connection is opened
        self.validate()
        redis: RedisConnection | None = None
        if isinstance(chosen, RedisSettings):
            redis = await self._open_redis(chosen)
            chosen = redis.store
        try:
            self._running = await self._launch(
                transport=transport,
                consumer=consumer,
                publisher=publisher,
                store=chosen,
                clock=clock,
                rng=rng,
                observers=observers,
                redis=redis,
            )
        except BaseException:
            if redis is not None:
                await redis.close()
            raise

    async def _open_redis(self, settings: RedisSettings) -> RedisConnection:
        # imported here: redis is loaded only by processes that use the Redis store
        from eventkit.idempotency import redis_connect  # noqa: PLC0415

        redis = await redis_connect.open_redis_store(settings)
        try:
            await redis_connect.log_startup(
                redis,
                namespace=namespace_for(self.service, self.group_id),
                lease_seconds=self.policies.lease_seconds,
                done_ttls=self._done_ttls(),
            )
        except BaseException:
            await redis.close()
            raise
        return redis

    def _done_ttls(self) -> dict[str, float]:
        """The done-TTL of each idempotent event type (the longest, if handlers differ)."""
        ttls: dict[str, float] = {}
        for spec in self:
            if self.policies.idempotent(spec):
                ttl = self.policies.ttl_for(spec)
                ttls[spec.event_type] = max(ttl, ttls.get(spec.event_type, ttl))
        return ttls

    async def _launch(
        self,
        *,
        transport: Transport | None,
        consumer: Consumer,
        publisher: Publisher,
        store: IdempotencyStore | None,
        clock: Clock,
        rng: random.Random | None,
        observers: Sequence[RecordObserver],
        redis: RedisConnection | None,
    ) -> _Running:
        dispatcher = self.build(
            publisher=publisher, store=store, clock=clock, rng=rng, observers=observers
        )
        if transport is not None:
            await transport.admin.ensure_topics(self.topics() | self.dead_letter_topics())
        await publisher.start()
        guard = dispatcher.guard
        worker = Worker(
            consumer,
            dispatcher.dispatch,
            topics=self.topics(),
            config=self.worker_config,
            clock=clock,
            release_unstarted=guard.release_unstarted if guard is not None else None,
            background=[guard.keep_leases] if guard is not None else [],
            key_ordered_topics=self.key_ordered_topics(),
        )
        try:
            await worker.start()
        except BaseException:
            await publisher.stop()
            raise
        return _Running(worker, dispatcher, publisher, redis)

    async def stop(self) -> bool:
        """Drain, commit, stop consuming and publishing, close Redis; ``True`` if all finished.

        If ``stop`` itself is cancelled the app stays running, so ``abort`` can still end it.
        """
        running = self._running
        if running is None:
            return True
        clean = await running.worker.stop()
        try:
            await running.publisher.stop()
        finally:
            # last: the drain above still completes and releases keys in the store
            if running.redis is not None:
                await running.redis.close()
        # cleared only now: a stop cancelled before this point can still be aborted
        self._running = None
        return clean

    async def abort(self) -> None:
        """Stop consuming at once, without draining or committing; then stop publishing.

        A Redis connection the app opened is closed too.
        """
        running = self._running
        if running is None:
            return
        self._running = None
        try:
            await running.worker.abort()
        finally:
            try:
                await running.publisher.stop()
            finally:
                if running.redis is not None:
                    await running.redis.close()

    @property
    def running(self) -> bool:
        return self._running is not None

    @property
    def redis(self) -> RedisConnection | None:
        """The Redis connection the app opened from ``store=`` a URL or ``RedisSettings``.

        ``None`` when the app is not running or the store was not opened by the app. Its
        ``memory_used()`` is for alerting and metrics.
        """
        return None if self._running is None else self._running.redis

    @property
    def worker(self) -> Worker:
        if self._running is None:
            raise PublisherNotStartedError(f"app {self.service!r} is not running")
        return self._running.worker

    @property
    def dispatcher(self) -> Dispatcher:
        if self._running is None:
            raise PublisherNotStartedError(f"app {self.service!r} is not running")
        return self._running.dispatcher

    @property
    def publisher(self) -> EventPublisher:
        """Publishes in this app's name; usable while the app runs."""
        if self._running is None:
            raise PublisherNotStartedError(f"app {self.service!r} is not running")
        return EventPublisher(self._running.publisher, source_service=self.service)

    def testing(self, **options: Any) -> TestBus:
        """An in-memory broker, store and fake clock running this app's real dispatcher."""
        from eventkit.testing import TestBus  # noqa: PLC0415 - testing imports this module

        return TestBus(self, **options)


@dataclass(frozen=True, slots=True)
class _Running:
    worker: Worker
    dispatcher: Dispatcher
    publisher: Publisher
    redis: RedisConnection | None


def _store_choice(store: StoreOption, clock: Clock) -> IdempotencyStore | RedisSettings | None:
    """The store ``start(store=...)`` names: an object, settings to open, or none."""
    if not isinstance(store, str):
        return store
    # read as the CLI reads --idempotency-store: the names in any case, spaces around ignored
    choice = store.strip()
    if choice.lower() == "none":
        return None
    if choice.lower() == "memory":
        return InMemoryIdempotencyStore(clock)
    scheme = choice.partition("://")[0]
    if scheme in SCHEMES:
        return RedisSettings.from_url(choice)
    # the value may be a mistyped URL with a password: show its scheme only
    raise ConfigurationError(
        f"unknown idempotency store {scheme!r}: use none, memory, or a redis:// or rediss:// URL"
    )
