"""Settling a failure: final ones go to the DLQ; infrastructure failures defer the record."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from eventkit.errors import InfrastructureError
from eventkit.outcomes import Outcome

logger = logging.getLogger("eventkit.deadletters")

if TYPE_CHECKING:
    from eventkit.deadletters import DeadLetterPublisher
    from eventkit.delivery import Delivery


async def settle_failure(
    publisher: DeadLetterPublisher, delivery: Delivery, error: Exception
) -> Outcome:
    """The outcome of a record whose processing raised ``error``.

    An ``InfrastructureError`` (store, broker, DLQ producer) is never the record's fault: it
    is ``DEFERRED`` and tried again. Anything else is final: the record goes to the
    dead-letter topic and is ``DEAD_LETTERED`` once the DLQ acknowledged, or stays
    ``DEFERRED`` when the DLQ could not be written (a dead letter not acknowledged is no skip).
    """
    delivery.error = error
    if isinstance(error, InfrastructureError):
        return Outcome.DEFERRED
    # the verdict is kept: if the DLQ is down, the next try only sends the dead letter
    delivery.verdict = error
    try:
        await publisher.send(delivery, error)
    except InfrastructureError:
        return Outcome.DEFERRED
    except Exception:
        # an unexpected DLQ failure is still no acknowledgement: keep the record, say why
        logger.exception("dead letter of %r was not sent", delivery)
        return Outcome.DEFERRED
    return Outcome.DEAD_LETTERED
