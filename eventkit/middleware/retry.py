"""``retry``: bounded in-partition retries with full-jitter back-off on the injected clock."""

from __future__ import annotations

from typing import TYPE_CHECKING

from eventkit.errors import InfrastructureError

if TYPE_CHECKING:
    import random

    from eventkit.delivery import Delivery
    from eventkit.outcomes import Outcome
    from eventkit.pipeline import Middleware, Next
    from eventkit.ports import Clock
    from eventkit.retry import RetryPolicy


def retry(policy: RetryPolicy, clock: Clock, rng: random.Random) -> Middleware:
    """Call the rest of the chain until it succeeds or the policy gives up, then re-raise.

    Each call is one attempt (``delivery.attempt`` counts them). The back-off sleep marks the
    delivery as waiting, so revoke and shutdown cancel it at once instead of draining it.
    Infrastructure errors pass through untouched: they are never a handler's attempt.
    """

    def wrap(next_: Next) -> Next:
        async def run(delivery: Delivery) -> Outcome:
            while True:
                delivery.attempt += 1
                try:
                    return await next_(delivery)
                except InfrastructureError:
                    raise
                except Exception as exc:
                    now = clock.now()
                    if delivery.first_failure is None:
                        delivery.first_failure = now
                    delivery.last_failure = now
                    delivery.error = exc
                    if delivery.attempt >= policy.max_attempts or not policy.is_retryable(exc):
                        raise
                delivery.waiting = True
                try:
                    await clock.sleep(policy.delay(delivery.attempt, rng))
                finally:
                    delivery.waiting = False

        return run

    return wrap
