"""``RetryPolicy``: full-jitter back-off stays within its ceiling; what may be retried at all."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventkit import (
    ConfigurationError,
    InvalidPayloadError,
    NonRetryableError,
    OversizedRecordError,
    PoisonRecordError,
    RetryableError,
    RetryPolicy,
    UndecodableRecordError,
    UnroutableEventError,
)
from eventkit.middleware.timeout import HandlerTimeoutError

DELAYS = st.floats(min_value=0.0, max_value=1e9, allow_nan=False, allow_infinity=False)
ATTEMPTS = st.integers(min_value=1, max_value=10**30)
SEEDS = st.integers(min_value=0, max_value=2**64)


@st.composite
def policies(draw: st.DrawFn) -> RetryPolicy:
    """Valid policies: max_attempts >= 1 and 0 <= base_delay <= max_delay, both finite."""
    base = draw(DELAYS)
    spread = draw(DELAYS)
    return RetryPolicy(
        max_attempts=draw(st.integers(min_value=1, max_value=1_000)),
        base_delay=base,
        max_delay=base + spread,
    )


class PaymentDeclinedError(Exception):
    """A domain error a policy may list in ``dead_letter_on``."""


class GatewayDownError(Exception):
    """A domain error a policy may list in ``retry_on``."""


class CustomPoisonError(PoisonRecordError):
    """A user-defined poison class."""

    reason = "custom"


@settings(max_examples=300, deadline=None)
@given(policy=policies(), attempt=ATTEMPTS, seed=SEEDS)
def test_delay_is_within_zero_and_ceiling(policy: RetryPolicy, attempt: int, seed: int) -> None:
    """Every wait lies in ``[0, ceiling(n)]`` for any attempt and seeded generator."""
    delay = policy.delay(attempt, random.Random(seed))
    assert math.isfinite(delay)
    assert 0.0 <= delay <= policy.ceiling(attempt)


@settings(max_examples=300, deadline=None)
@given(policy=policies(), attempt=ATTEMPTS, step=st.integers(min_value=0, max_value=10**6))
def test_ceiling_is_non_decreasing_and_capped(policy: RetryPolicy, attempt: int, step: int) -> None:
    """``ceiling`` never shrinks as attempts grow and never exceeds ``max_delay``."""
    lower = policy.ceiling(attempt)
    higher = policy.ceiling(attempt + step)
    assert 0.0 <= lower <= higher <= policy.max_delay


@settings(max_examples=100, deadline=None)
@given(policy=policies(), attempt=st.integers(min_value=10**6, max_value=10**100), seed=SEEDS)
def test_huge_attempt_numbers_do_not_overflow(policy: RetryPolicy, attempt: int, seed: int) -> None:
    """Absurdly large attempt numbers still give a finite wait, capped at ``max_delay``."""
    ceiling = policy.ceiling(attempt)
    assert math.isfinite(ceiling)
    assert policy.ceiling(100) <= ceiling <= policy.max_delay
    if policy.base_delay >= 1e-9:
        # 2 ** 63 doublings of any non-negligible base pass every finite cap drawn here
        assert ceiling == policy.max_delay
    assert 0.0 <= policy.delay(attempt, random.Random(seed)) <= ceiling


def test_ceiling_doubles_from_base_until_capped() -> None:
    """The ceiling is ``base * 2 ** (n - 1)`` until it reaches ``max_delay``."""
    policy = RetryPolicy(base_delay=0.5, max_delay=5.0)
    assert [policy.ceiling(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_same_seed_gives_same_delays() -> None:
    """Jitter comes only from the injected generator: the same seed repeats the same waits."""
    policy = RetryPolicy()
    first = [policy.delay(n, random.Random(7)) for n in range(1, 10)]
    second = [policy.delay(n, random.Random(7)) for n in range(1, 10)]
    assert first == second


def test_zero_delays_give_zero_waits() -> None:
    """A policy with zero delays retries at once."""
    policy = RetryPolicy(base_delay=0.0, max_delay=0.0)
    assert policy.delay(3, random.Random(1)) == 0.0


@pytest.mark.parametrize(
    "options",
    [
        {"max_attempts": 0},
        {"max_attempts": -1},
        {"base_delay": -0.1},
        {"base_delay": 0.0, "max_delay": -1.0},
        {"base_delay": 2.0, "max_delay": 1.0},
    ],
    ids=["zero-attempts", "negative-attempts", "negative-base", "negative-max", "max-below-base"],
)
def test_invalid_policy_raises_configuration_error(options: dict[str, Any]) -> None:
    """max_attempts < 1, negative delays and max_delay < base_delay are refused."""
    with pytest.raises(ConfigurationError):
        RetryPolicy(**options)


@pytest.mark.parametrize(
    "options",
    [
        {"base_delay": math.nan},
        {"max_delay": math.nan},
        {"base_delay": math.inf, "max_delay": math.inf},
    ],
    ids=["nan-base", "nan-max", "infinite-base"],
)
def test_non_finite_delays_raise_configuration_error(options: dict[str, Any]) -> None:
    """NaN or infinite delays are refused (they would make every wait NaN or infinite)."""
    with pytest.raises(ConfigurationError):
        RetryPolicy(**options)


@pytest.mark.parametrize(
    "error",
    [
        NonRetryableError("declined"),
        PoisonRecordError("bad"),
        InvalidPayloadError("bad payload"),
        UndecodableRecordError("not json"),
        OversizedRecordError("too big"),
        UnroutableEventError("no handler"),
        CustomPoisonError("custom"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_non_retryable_and_poison_errors_are_not_retryable(error: Exception) -> None:
    """``NonRetryableError`` and any ``PoisonRecordError`` skip retries, whatever retry_on says."""
    assert RetryPolicy().is_retryable(error) is False
    assert RetryPolicy(retry_on=(BaseException,)).is_retryable(error) is False


def test_dead_letter_on_types_are_not_retryable() -> None:
    """An exception listed in ``dead_letter_on`` (or a subclass) is dead-lettered at once."""
    policy = RetryPolicy(dead_letter_on=(PaymentDeclinedError, LookupError))
    assert policy.is_retryable(PaymentDeclinedError("card")) is False
    assert policy.is_retryable(KeyError("missing")) is False
    assert policy.is_retryable(ValueError("other")) is True


def test_types_outside_retry_on_are_not_retryable() -> None:
    """With a narrowed ``retry_on`` only those exceptions (and subclasses) are retried."""
    policy = RetryPolicy(retry_on=(GatewayDownError, ConnectionError))
    assert policy.is_retryable(GatewayDownError("503")) is True
    assert policy.is_retryable(ConnectionResetError("reset")) is True
    assert policy.is_retryable(ValueError("bug")) is False


@pytest.mark.parametrize(
    "error",
    [
        ValueError("bug"),
        RuntimeError("flaky"),
        RetryableError("again"),
        HandlerTimeoutError("slow"),
        TimeoutError("own timeout"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_plain_exceptions_are_retryable_by_default(error: Exception) -> None:
    """With the default policy any other exception, timeouts included, is retried."""
    assert RetryPolicy().is_retryable(error) is True


def test_dead_letter_on_wins_over_retry_on() -> None:
    """An exception in both ``retry_on`` and ``dead_letter_on`` is not retried."""
    policy = RetryPolicy(retry_on=(Exception,), dead_letter_on=(PaymentDeclinedError,))
    assert policy.is_retryable(PaymentDeclinedError("card")) is False
