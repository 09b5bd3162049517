"""``build_dispatcher``: assembles the middleware chains of an app around its handlers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from eventkit.codecs.reader import EnvelopeReader
from eventkit.invoke import invoker
from eventkit.keys import namespace_for
from eventkit.middleware.deadletter import dead_letter
from eventkit.middleware.decode import decode, decode_delivery
from eventkit.middleware.idempotency import IdempotencyGuard
from eventkit.middleware.observe import OutcomeCounts, RecordObserver, observe
from eventkit.middleware.retry import retry
from eventkit.middleware.route import RouteTable
from eventkit.middleware.timeout import timeout
from eventkit.pipeline import Middleware, Next, compose

if TYPE_CHECKING:
    import random
    from collections.abc import Sequence

    from eventkit.app import AppPolicies
    from eventkit.deadletters import DeadLetterPublisher
    from eventkit.delivery import Delivery
    from eventkit.ports import Clock, IdempotencyStore
    from eventkit.publisher import EventPublisher
    from eventkit.routing import HandlerSpec, Router


@dataclass(frozen=True, slots=True)
class Dispatcher:
    """The assembled record path of one app: ``dispatch`` runs one delivery to an outcome."""

    dispatch: Next
    routes: RouteTable
    counts: OutcomeCounts
    guard: IdempotencyGuard | None


def build_dispatcher(
    router: Router,
    policies: AppPolicies,
    *,
    group_id: str,
    publisher: EventPublisher | None,
    dead_letters: DeadLetterPublisher,
    store: IdempotencyStore | None,
    clock: Clock,
    rng: random.Random,
    middlewares: Sequence[Middleware] = (),
    observers: Sequence[RecordObserver] = (),
) -> Dispatcher:
    """Build the outer chain and one inner chain per handler.

    Outer: observe -> dead_letter -> route. Inner, per handler: decode -> user middlewares ->
    idempotency -> dead_letter -> retry -> timeout -> count start -> handler. Idempotency sits
    outside retry so that one claim covers every attempt and DONE follows the DLQ ack.
    """
    reader = EnvelopeReader(policies.limits)
    counts = OutcomeCounts()
    dead_letter_step = dead_letter(dead_letters)
    routes_holder: list[RouteTable] = []

    def prepare(delivery: Delivery) -> HandlerSpec | None:
        route = routes_holder[0].resolve(delivery)
        if route is None or not policies.idempotent(route[0]):
            return None
        decode_delivery(delivery, route[0])
        return route[0]

    guard = None
    if store is not None and any(policies.idempotent(spec) for spec in router):
        guard = IdempotencyGuard(
            store,
            namespace=namespace_for(policies.service, group_id),
            lease_seconds=policies.lease_seconds,
            max_chunk=policies.max_claim_chunk,
            clock=clock,
            prepare=prepare,
            ttl_for=policies.ttl_for,
        )

    table: dict[str, dict[str, tuple[HandlerSpec, Next]]] = {}
    for spec in router:
        steps: list[Middleware] = [decode(spec), *middlewares]
        idempotent = guard is not None and policies.idempotent(spec)
        if guard is not None and idempotent:
            steps.append(guard.middleware(spec))
        steps.append(dead_letter_step)
        steps.append(retry(policies.retry_for(spec), clock, rng))
        if spec.options.timeout is not None:
            steps.append(timeout(spec.options.timeout))
        if guard is not None and idempotent:
            steps.append(guard.count_start())
        chain = compose(steps, invoker(spec, publisher))
        table.setdefault(spec.topic, {})[spec.event_type] = (spec, chain)

    routes = RouteTable(table, reader, policies.unknown_event_types)
    routes_holder.append(routes)
    outer = compose(
        [observe(counts, observers, clock.monotonic), dead_letter_step], routes.dispatch()
    )
    return Dispatcher(dispatch=outer, routes=routes, counts=counts, guard=guard)
