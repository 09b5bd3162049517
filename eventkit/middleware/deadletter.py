"""``dead_letter``: final failures go to the DLQ; infrastructure failures defer the record."""

from __future__ import annotations

from typing import TYPE_CHECKING

from eventkit.errors import InfrastructureError
from eventkit.outcomes import Outcome

if TYPE_CHECKING:
    from eventkit.deadletters import DeadLetterPublisher
    from eventkit.delivery import Delivery
    from eventkit.pipeline import Middleware, Next


def dead_letter(publisher: DeadLetterPublisher) -> Middleware:
    """Turn exceptions into outcomes: ``DEAD_LETTERED`` once the DLQ acknowledged, else
    ``DEFERRED``.

    It stands twice in the chain: outside decoding, for poison input, and inside idempotency,
    for handler failures that retry gave up on, so that DONE is recorded only after the DLQ
    acknowledged. An ``InfrastructureError`` (store, broker, DLQ producer) is never a record's
    fault: the record is deferred and tried again, nothing is dead-lettered.
    """

    def wrap(next_: Next) -> Next:
        async def run(delivery: Delivery) -> Outcome:
            try:
                return await next_(delivery)
            except InfrastructureError as exc:
                delivery.error = exc
                return Outcome.DEFERRED
            except Exception as exc:
                delivery.error = exc
                try:
                    await publisher.send(delivery, exc)
                except InfrastructureError:
                    # a dead letter that was not acknowledged is not a skip
                    return Outcome.DEFERRED
                return Outcome.DEAD_LETTERED

        return run

    return wrap
