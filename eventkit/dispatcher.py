"""``build_dispatcher``: assembles the middleware chains of an app around its handlers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eventkit.codecs.reader import EnvelopeReader
from eventkit.invoke import handler_call, invoker
from eventkit.keys import namespace_for
from eventkit.middleware.deadletter import settle_failure
from eventkit.middleware.decode import decode_delivery
from eventkit.middleware.idempotency import IdempotencyGuard
from eventkit.middleware.observe import OutcomeCounts, RecordObserver, observe, outcome_counts
from eventkit.middleware.retry import retry, retry_handler, stray_cancel
from eventkit.middleware.route import DirectCall, Route, RouteTable
from eventkit.middleware.timeout import timeout
from eventkit.outcomes import Outcome
from eventkit.pipeline import Middleware, Next, compose

if TYPE_CHECKING:
    import random
    from collections.abc import Sequence

    from eventkit.app import AppPolicies
    from eventkit.deadletters import DeadLetterPublisher
    from eventkit.delivery import Delivery
    from eventkit.ports import Clock, IdempotencyStore
    from eventkit.publisher import EventPublisher
    from eventkit.routing import Router


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

    Entry (route, decode, settle failures, count), wrapped by ``observe`` when there are
    observers. Inner, per handler: user middlewares -> idempotency -> retry (which has the
    idempotency step count each start in the store, and dead-letters what it gives up on)
    -> timeout -> handler.
    Idempotency sits outside retry so that one claim covers every attempt and DONE follows
    the DLQ acknowledgement.
    """
    reader = EnvelopeReader(policies.limits)
    counts = outcome_counts()
    routes_holder: list[RouteTable] = []

    def prepare(delivery: Delivery) -> bool:
        """Route and decode a queued delivery; whether its key is to be claimed."""
        routes = routes_holder[0]
        route = delivery.route or routes.fast(delivery)
        if route is None:
            route = routes.resolve(delivery)
            if route is None or not route.idempotent:
                return False
        if route.idempotent and not delivery.decoded:
            decode_delivery(delivery, route.spec)
        return route.idempotent

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

    table: dict[str, dict[str, Route]] = {}
    for spec in router:
        idempotent = guard is not None and policies.idempotent(spec)
        steps: list[Middleware] = list(middlewares)
        call = handler_call(spec, publisher)
        policy = policies.retry_for(spec)
        # idempotency hashes the raw payload, so its handlers keep the two-pass decode
        one_pass = None if idempotent else spec.envelope_decoder
        if spec.options.timeout is not None:
            if guard is not None and idempotent:
                steps.append(guard.middleware(spec))
            steps.append(retry(policy, clock, rng, dead_letters))
            steps.append(timeout(spec.options.timeout))
            route = Route(spec, compose(steps, invoker(call)), one_pass, idempotent=idempotent)
            table.setdefault(spec.topic, {})[spec.event_type] = route
            continue
        # nothing between retry and the handler: retry calls it, a coroutine less; the step
        # before retry (the entry step, or the idempotency step) makes the first attempt
        attempts = retry_handler(policy, clock, rng, dead_letters, call)
        direct = DirectCall(call, attempts.after_failure, policy.max_attempts)
        if guard is not None and idempotent:
            steps.append(guard.middleware(spec, direct))
        if steps:
            route = Route(spec, compose(steps, attempts.run), one_pass, idempotent=idempotent)
        else:
            route = Route(spec, attempts.run, one_pass, direct)
        table.setdefault(spec.topic, {})[spec.event_type] = route

    routes = RouteTable(table, reader, policies.unknown_event_types)
    routes_holder.append(routes)
    dispatch = entry(routes, dead_letters, counts, guard)
    if observers:
        dispatch = observe(observers, clock.monotonic)(dispatch)
    return Dispatcher(dispatch=dispatch, routes=routes, counts=counts, guard=guard)


def entry(
    routes: RouteTable,
    dead_letters: DeadLetterPublisher,
    counts: OutcomeCounts,
    guard: IdempotencyGuard | None,
) -> Next:
    """Where every record enters: route, decode, run the handler's chain, settle, count.

    Routing and decoding run here rather than as layers of their own (decoding needs the
    route, the handler's payload type), the common record in one call (``RouteTable.fast``),
    and so does settling what escaped the handler's chain (poison input, errors of user
    middlewares): a layer costs a coroutine per record. Where the chain is only the retry
    step around the handler, this step makes the first attempt itself. A claim made ahead
    for a record that never reached its idempotency step is released.
    """
    fast = routes.fast
    resolve = routes.resolve
    # locals: reading an Enum member through its class is slow
    skipped = Outcome.SKIPPED
    handled = Outcome.HANDLED

    async def run(delivery: Delivery) -> Outcome:
        try:
            # routed already when it was claimed ahead, or dispatched before (deferred)
            route = delivery.route
            if route is None:
                route = fast(delivery)
                if route is None:
                    route = resolve(delivery)
            if route is None:
                outcome = skipped
            else:
                if not delivery.decoded:
                    decode_delivery(delivery, route.spec)
                direct = route.direct
                if (
                    direct is not None
                    and delivery.verdict is None
                    and delivery.attempt < direct.max_attempts
                ):
                    # a plain chain's first attempt, made here where the retry step would
                    # make it: nothing is settled yet (no verdict, attempts left)
                    call, after_failure, _ = direct
                    delivery.attempt += 1
                    error: Exception | None = None
                    try:
                        await call(delivery)
                    except Exception as exc:
                        error = exc
                    except asyncio.CancelledError:
                        error = stray_cancel()
                    # retried outside the except block: the next attempt sees no exception
                    outcome = handled if error is None else await after_failure(delivery, error)
                else:
                    outcome = await route.chain(delivery)
        except Exception as exc:
            outcome = await settle_failure(dead_letters, delivery, exc)
        if delivery.claim is not None and guard is not None:
            # claimed ahead, but a user middleware finished it before the idempotency step
            await guard.give_up(delivery)
        counts[outcome] += 1
        return outcome

    return run
