"""``timeout``: a handler that runs too long fails its attempt (and is retried)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from eventkit.delivery import Delivery
    from eventkit.outcomes import Outcome
    from eventkit.pipeline import Middleware, Next


class HandlerTimeoutError(TimeoutError):
    """The handler did not finish within its timeout; the attempt failed and may retry."""


def timeout(seconds: float) -> Middleware:
    """Cancel an attempt that runs longer than ``seconds`` and fail it."""

    def wrap(next_: Next) -> Next:
        async def run(delivery: Delivery) -> Outcome:
            scope = asyncio.timeout(seconds)
            try:
                async with scope:
                    return await next_(delivery)
            except TimeoutError:
                if not scope.expired():
                    raise  # the handler's own TimeoutError, not ours
                raise HandlerTimeoutError(f"handler did not finish within {seconds} s") from None

        return run

    return wrap
