"""``FakeClock``: time moves only through ``advance``, and sleepers wake in deadline order."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from eventkit.fakeclock import DEFAULT_EPOCH, FakeClock

if TYPE_CHECKING:
    from collections.abc import Callable


async def until(condition: Callable[[], bool], max_yields: int = 50) -> None:
    """Yield to the event loop until ``condition`` holds; fail if it never does."""
    for _ in range(max_yields):
        if condition():
            return
        await asyncio.sleep(0)  # one loop turn, not a wait on time
    raise AssertionError("condition not reached")


async def loop_turns(count: int = 10) -> None:
    """Let every ready task run for ``count`` turns of the event loop (no time passes)."""
    for _ in range(count):
        await asyncio.sleep(0)


async def sleeping(clock: FakeClock, seconds: float, woke: list[float]) -> None:
    """Sleep on the fake clock, then note the deadline."""
    await clock.sleep(seconds)
    woke.append(seconds)


def test_clock_starts_at_fixed_epoch_and_zero() -> None:
    """``now`` starts at the fixed epoch and ``monotonic`` at zero."""
    clock = FakeClock()
    assert clock.now() == DEFAULT_EPOCH
    assert clock.monotonic() == 0.0
    assert FakeClock(epoch=5.0).now() == 5.0


def test_now_and_monotonic_move_together() -> None:
    """``advance`` moves wall and monotonic time by the same step."""
    clock = FakeClock()
    clock.advance(2.5)
    clock.advance(0.25)
    assert clock.monotonic() == 2.75
    assert clock.now() - DEFAULT_EPOCH == pytest.approx(2.75)


def test_advance_backwards_raises() -> None:
    """A negative step raises ValueError and leaves time alone."""
    clock = FakeClock()
    with pytest.raises(ValueError, match="cannot advance"):
        clock.advance(-1.0)
    assert clock.monotonic() == 0.0


async def test_sleep_returns_only_once_deadline_is_passed() -> None:
    """A sleeper stays parked until ``advance`` reaches its deadline."""
    clock = FakeClock()
    task = asyncio.create_task(clock.sleep(5.0))
    await until(lambda: clock.sleepers == 1)
    assert clock.next_deadline() == 5.0
    clock.advance(4.9)
    await loop_turns()
    assert not task.done()
    assert clock.sleepers == 1
    clock.advance(0.1)
    await until(task.done)
    assert clock.sleepers == 0
    assert clock.next_deadline() is None


async def test_sleepers_wake_in_deadline_order() -> None:
    """One big advance wakes sleepers in deadline order, ties in the order they slept."""
    clock = FakeClock()
    woke: list[float] = []
    tasks = [asyncio.create_task(sleeping(clock, s, woke)) for s in (3.0, 1.0, 2.0, 1.0)]
    await until(lambda: clock.sleepers == 4)
    clock.advance(10.0)
    await until(lambda: len(woke) == 4)
    assert woke == [1.0, 1.0, 2.0, 3.0]
    assert all(task.done() for task in tasks)


async def test_advance_wakes_only_reached_deadlines() -> None:
    """Sleepers with a later deadline keep sleeping after an advance."""
    clock = FakeClock()
    woke: list[float] = []
    tasks = [asyncio.create_task(sleeping(clock, s, woke)) for s in (1.0, 4.0)]
    await until(lambda: clock.sleepers == 2)
    clock.advance(2.0)
    await loop_turns()
    assert woke == [1.0]
    assert clock.sleepers == 1
    assert clock.next_deadline() == 4.0
    clock.advance(2.0)
    await until(lambda: all(task.done() for task in tasks))
    assert woke == [1.0, 4.0]


async def test_advance_to_next_stops_at_earliest_deadline() -> None:
    """``advance_to_next`` moves exactly to the earliest deadline, waking only that sleeper."""
    clock = FakeClock()
    assert not clock.advance_to_next()
    woke: list[float] = []
    tasks = [asyncio.create_task(sleeping(clock, s, woke)) for s in (7.0, 3.0)]
    await until(lambda: clock.sleepers == 2)
    assert clock.advance_to_next()
    assert clock.monotonic() == 3.0
    await until(lambda: woke == [3.0])
    assert clock.advance_to_next()
    assert clock.monotonic() == 7.0
    await until(lambda: all(task.done() for task in tasks))
    assert woke == [3.0, 7.0]
    assert not clock.advance_to_next()


async def test_cancelled_sleeper_leaves_nothing_behind() -> None:
    """Cancelling a sleeping task removes its waiter; later advances do not touch it."""
    clock = FakeClock()
    woke: list[float] = []
    cancelled = asyncio.create_task(sleeping(clock, 1.0, woke))
    kept = asyncio.create_task(sleeping(clock, 2.0, woke))
    await until(lambda: clock.sleepers == 2)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert clock.sleepers == 1
    assert clock.next_deadline() == 2.0
    clock.advance(5.0)
    await kept
    assert woke == [2.0]
    assert clock.sleepers == 0


async def test_cancel_after_wake_is_clean() -> None:
    """A sleeper cancelled after ``advance`` woke it but before it ran just ends cancelled."""
    clock = FakeClock()
    task = asyncio.create_task(clock.sleep(1.0))
    await until(lambda: clock.sleepers == 1)
    clock.advance(1.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.sleepers == 0
    assert clock.next_deadline() is None


@pytest.mark.parametrize("seconds", [0.0, -3.0])
async def test_sleep_zero_or_negative_returns_without_advance(seconds: float) -> None:
    """``sleep`` of zero or less returns after one loop turn, with time unchanged."""
    clock = FakeClock()
    await asyncio.wait_for(clock.sleep(seconds), timeout=5.0)
    assert clock.monotonic() == 0.0
    assert clock.sleepers == 0


async def test_cancelled_sleeper_is_gone_before_its_task_runs_again() -> None:
    """Right after ``cancel``, the waiter no longer counts and an advance skips it."""
    clock = FakeClock()
    task = asyncio.create_task(clock.sleep(1.0))
    await until(lambda: clock.sleepers == 1)
    task.cancel()
    assert clock.sleepers == 0
    assert clock.next_deadline() is None
    clock.advance(2.0)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.sleepers == 0


async def test_advance_skips_a_cancelled_waiter_still_queued() -> None:
    """An advance that reaches a just-cancelled waiter leaves it cancelled and wakes the rest."""
    clock = FakeClock()
    cancelled = asyncio.create_task(clock.sleep(1.0))
    kept = asyncio.create_task(clock.sleep(1.0))
    await until(lambda: clock.sleepers == 2)
    cancelled.cancel()
    clock.advance(1.0)
    await kept
    with pytest.raises(asyncio.CancelledError):
        await cancelled
