"""``observe``: the hook point where metrics and logging see every record's outcome."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from eventkit.outcomes import Outcome

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from eventkit.delivery import Delivery
    from eventkit.pipeline import Middleware, Next


class RecordObserver(Protocol):
    """Told about every record that reached an outcome, with how long it took."""

    def record_finished(self, delivery: Delivery, outcome: Outcome, seconds: float) -> None: ...


class OutcomeCounts(dict[Outcome, int]):
    """How many records reached each outcome; always kept, at the cost of one dict update."""

    def __init__(self) -> None:
        super().__init__(dict.fromkeys(Outcome, 0))


def observe(
    counts: OutcomeCounts,
    observers: Sequence[RecordObserver],
    monotonic: Callable[[], float],
) -> Middleware:
    """Count each record's outcome and, when there are observers, time it and tell them."""
    hooks = tuple(observer.record_finished for observer in observers)

    def wrap(next_: Next) -> Next:
        if not hooks:

            async def count(delivery: Delivery) -> Outcome:
                outcome = await next_(delivery)
                counts[outcome] += 1
                return outcome

            return count

        async def run(delivery: Delivery) -> Outcome:
            started = monotonic()
            outcome = await next_(delivery)
            elapsed = monotonic() - started
            counts[outcome] += 1
            for hook in hooks:
                hook(delivery, outcome, elapsed)
            return outcome

        return run

    return wrap
