"""``RetryPolicy``: how often and how long to retry a failing handler."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eventkit.errors import ConfigurationError, NonRetryableError, PoisonRecordError

if TYPE_CHECKING:
    import random


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries with full-jitter exponential back-off.

    Attempt ``n`` (1-based) that fails waits a random time in
    ``[0, min(max_delay, base_delay * 2 ** (n - 1))]`` before attempt ``n + 1``; after
    ``max_attempts`` failed attempts the record is dead-lettered. Exceptions in
    ``dead_letter_on`` (and ``NonRetryableError``, and poison input) skip the remaining
    attempts; only exceptions in ``retry_on`` are retried at all.
    """

    max_attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 30.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    dead_letter_on: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError("RetryPolicy.max_attempts must be at least 1")
        for name in ("base_delay", "max_delay"):
            value = getattr(self, name)
            # NaN fails every comparison, so finiteness is checked before the sign
            if not math.isfinite(value) or value < 0:
                raise ConfigurationError(f"RetryPolicy.{name} must be finite and not negative")
        if self.max_delay < self.base_delay:
            raise ConfigurationError("RetryPolicy.max_delay must be at least base_delay")

    def is_retryable(self, error: BaseException) -> bool:
        """Whether ``error`` may be retried at all (attempts left aside)."""
        if isinstance(error, NonRetryableError | PoisonRecordError):
            return False
        if self.dead_letter_on and isinstance(error, self.dead_letter_on):
            return False
        return isinstance(error, self.retry_on)

    def ceiling(self, attempt: int) -> float:
        """The longest wait after failed attempt ``attempt`` (1-based)."""
        # cap the exponent so large attempt numbers cannot overflow a float
        return min(self.max_delay, self.base_delay * 2.0 ** min(attempt - 1, 64))

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The full-jitter wait after failed attempt ``attempt`` (1-based)."""
        return rng.uniform(0.0, self.ceiling(attempt))
