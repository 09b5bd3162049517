"""``observe``: the hook point where metrics and logging see every record's outcome."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from eventkit.outcomes import Outcome

logger = logging.getLogger("eventkit.observe")

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from eventkit.delivery import Delivery
    from eventkit.pipeline import Middleware, Next


class RecordObserver(Protocol):
    """Told about every record that reached an outcome, with how long it took."""

    def record_finished(self, delivery: Delivery, outcome: Outcome, seconds: float) -> None: ...


#: How many records reached each outcome; the dispatcher keeps it for every record.
OutcomeCounts = dict[Outcome, int]


def outcome_counts() -> OutcomeCounts:
    """Zeroed counts (a plain dict: subscripting a subclass skips the fast path)."""
    return dict.fromkeys(Outcome, 0)


def observe(observers: Sequence[RecordObserver], monotonic: Callable[[], float]) -> Middleware:
    """Time each record and tell every observer its outcome (added only when there are any)."""
    hooks = tuple(observer.record_finished for observer in observers)

    def wrap(next_: Next) -> Next:
        async def run(delivery: Delivery) -> Outcome:
            started = monotonic()
            outcome = await next_(delivery)
            elapsed = monotonic() - started
            for hook in hooks:
                try:
                    hook(delivery, outcome, elapsed)
                except Exception:
                    # an observer's bug must not stop the partition it observes
                    logger.exception("record observer %r failed", hook)
            return outcome

        return run

    return wrap
