"""``retry``: one failure policy — bounded retries with full-jitter back-off, then settle.

Settling a failure the policy gives up on means the dead-letter topic (or ``DEFERRED`` for
infrastructure errors and an unwritable DLQ); retries and dead letters are one decision.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, NamedTuple, Protocol

from eventkit.errors import AttemptsExhaustedError, HandlerCancelledError, InfrastructureError
from eventkit.middleware.deadletter import settle_failure
from eventkit.outcomes import Outcome

if TYPE_CHECKING:
    import random
    from collections.abc import Awaitable, Callable
    from typing import Any

    from eventkit.deadletters import DeadLetterPublisher
    from eventkit.delivery import Delivery
    from eventkit.pipeline import Middleware, Next
    from eventkit.ports import Clock
    from eventkit.retry import RetryPolicy


STRAY_CANCEL = "the handler raised CancelledError while its task was not being cancelled"


def _being_cancelled() -> bool:
    """Whether the running task was asked to stop (then a CancelledError must propagate)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


class _Policy:
    """The decisions shared by both shapes of the retry step."""

    __slots__ = ("clock", "dead_letters", "policy", "rng")

    def __init__(
        self,
        policy: RetryPolicy,
        clock: Clock,
        rng: random.Random,
        dead_letters: DeadLetterPublisher,
    ) -> None:
        self.policy = policy
        self.clock = clock
        self.rng = rng
        self.dead_letters = dead_letters

    def settled_before(self, delivery: Delivery) -> Exception | None:
        """A failure decided before any attempt: a verdict whose dead letter is still to be
        sent, or no attempts left (the store counted them, some by deliveries that died)."""
        if delivery.verdict is not None:
            return delivery.verdict
        if delivery.attempt >= self.policy.max_attempts:
            return AttemptsExhaustedError(
                f"{delivery.attempt} handler starts are recorded for this event, the most "
                f"allowed is {self.policy.max_attempts}; earlier deliveries never finished"
            )
        return None

    def gives_up(self, delivery: Delivery, error: Exception) -> bool:
        """Record the failure; ``True`` when there is no further attempt."""
        if isinstance(error, InfrastructureError):
            # never a handler's attempt: settled as DEFERRED, tried again later
            delivery.attempt -= 1
            return True
        now = self.clock.now()
        if delivery.first_failure is None:
            delivery.first_failure = now
        delivery.last_failure = now
        delivery.error = error
        policy = self.policy
        return delivery.attempt >= policy.max_attempts or not policy.is_retryable(error)

    async def back_off(self, delivery: Delivery) -> None:
        """Wait before the next attempt; marked as waiting so revoke and shutdown cancel it."""
        if delivery.closing:
            # revoke or shutdown came first: give the record up now rather than wait
            raise asyncio.CancelledError
        delay = self.policy.delay(delivery.attempt, self.rng)
        keeper = delivery.lease_keeper
        if keeper is not None:
            await keeper.keep(delivery, delay)
            if delivery.closing:
                raise asyncio.CancelledError  # closed while the lease was being renewed
        delivery.waiting = True
        try:
            await self.clock.sleep(delay)
        finally:
            delivery.waiting = False


def retry(
    policy: RetryPolicy, clock: Clock, rng: random.Random, dead_letters: DeadLetterPublisher
) -> Middleware:
    """Call the rest of the chain until it succeeds or the policy gives up, then settle.

    Each call is one attempt (``delivery.attempt`` counts them; a claimed delivery's lease
    keeper records each start in the store first). A failure the policy gives up on is
    dead-lettered here, inside the idempotency step, so that DONE follows the DLQ
    acknowledgement. Infrastructure errors are never an attempt: the record is deferred.
    """
    decide = _Policy(policy, clock, rng, dead_letters)

    def wrap(next_: Next) -> Next:
        return _attempts(decide, next_, ends_chain=False)

    return wrap


class AttemptLoop(Protocol):
    """The attempt loop: with a delivery alone the whole step, with the error of a first
    attempt its caller made, the rest of it."""

    def __call__(
        self, delivery: Delivery, error: Exception | None = None, /
    ) -> Awaitable[Outcome]: ...


class HandlerAttempts(NamedTuple):
    """The attempt loop of a retry step that ends its chain, in two entry points.

    ``run`` is the whole step; ``after_failure`` continues it after a first attempt that
    the caller made itself and that raised (the entry step or the idempotency step does so
    where the retry step comes next, which saves a coroutine per record).
    """

    run: Next
    after_failure: Callable[[Delivery, Exception], Awaitable[Outcome]]


def retry_handler(
    policy: RetryPolicy,
    clock: Clock,
    rng: random.Random,
    dead_letters: DeadLetterPublisher,
    call: Callable[[Delivery], Awaitable[Any]],
) -> HandlerAttempts:
    """``retry`` ending the chain: it calls the handler itself, one coroutine less per record.

    Used when nothing stands between the retry step and the handler (no timeout); the
    behaviour is that of ``retry`` around the handler, exactly.
    """
    attempts = _attempts(_Policy(policy, clock, rng, dead_letters), call, ends_chain=True)
    return HandlerAttempts(attempts, attempts)


def stray_cancel() -> HandlerCancelledError:
    """The error of a ``CancelledError`` a handler raised by itself; re-raises it when the
    task really is being cancelled (then it must propagate). Call it in an ``except``."""
    if _being_cancelled():
        raise  # noqa: PLE0704  # only ever called while handling the CancelledError
    return HandlerCancelledError(STRAY_CANCEL)


def _attempts(
    decide: _Policy, call: Callable[[Delivery], Awaitable[Any]], *, ends_chain: bool
) -> AttemptLoop:
    """The attempt loop; ``call`` is the rest of the chain, or the handler when it
    ``ends_chain`` (then an attempt that returns is ``HANDLED``). Called with a delivery
    alone it is the whole step; with the ``error`` of a first attempt its caller made, it
    goes on from that failure."""
    dead_letters = decide.dead_letters
    handled = Outcome.HANDLED

    async def attempts(delivery: Delivery, error: Exception | None = None) -> Outcome:
        if error is None:
            settled = decide.settled_before(delivery)
            if settled is not None:
                return await settle_failure(dead_letters, delivery, settled)
        while True:
            if error is not None:
                if decide.gives_up(delivery, error):
                    return await settle_failure(dead_letters, delivery, error)
                await decide.back_off(delivery)
            delivery.attempt += 1
            try:
                keeper = delivery.lease_keeper
                if keeper is not None:
                    await keeper.starting(delivery)
                result = await call(delivery)
                return handled if ends_chain else result
            except Exception as exc:
                error = exc
            except asyncio.CancelledError:
                error = stray_cancel()

    return attempts
