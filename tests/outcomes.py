"""An ``OutcomeLog`` a test can await: shared by the tests that run an app on a transport."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from eventkit.testing import OutcomeLog

if TYPE_CHECKING:
    from eventkit.delivery import Delivery
    from eventkit.outcomes import Outcome


class Outcomes(OutcomeLog):
    """An ``OutcomeLog`` whose ``complete`` event is set once it holds ``count`` outcomes."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self._count = count
        self.complete = asyncio.Event()

    def record_finished(self, delivery: Delivery, outcome: Outcome, seconds: float) -> None:
        super().record_finished(delivery, outcome, seconds)
        if len(self.results) >= self._count:
            self.complete.set()
