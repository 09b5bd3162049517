"""``OffsetTracker``: the committed position never passes an unfinished record (R3, I5)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate

import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

from eventkit._mutation import planted
from eventkit.offsets import OffsetTracker, PartitionOffsets
from eventkit.ports import TopicPartition

TP0 = TopicPartition("orders", 0)
TP1 = TopicPartition("orders", 1)


@dataclass(frozen=True, slots=True)
class Run:
    """A partition's fetched offsets, how many are tracked up front, and a finishing order."""

    offsets: tuple[int, ...]
    tracked_up_front: int
    finish_order: tuple[int, ...]


@st.composite
def runs(draw: st.DrawFn) -> Run:
    """Strictly increasing offsets with arbitrary gaps, finished in any order, some never."""
    start = draw(st.integers(min_value=0, max_value=10**12))
    gaps = draw(st.lists(st.integers(min_value=1, max_value=1_000), max_size=39))
    offsets = list(accumulate(gaps, initial=start))
    order = draw(st.permutations(offsets))
    finished = draw(st.integers(min_value=0, max_value=len(offsets)))
    tracked = draw(st.integers(min_value=0, max_value=len(offsets)))
    return Run(tuple(offsets), tracked, tuple(order[:finished]))


def violations(run: Run) -> list[str]:
    """Replay a run on a fresh tracker and list every broken invariant, empty if none.

    Offsets are tracked lazily (up to the one about to finish), so fetches and finishes
    interleave as they do in a worker.
    """
    offsets = PartitionOffsets()
    problems: list[str] = []
    tracked = list(run.offsets[: run.tracked_up_front])
    for offset in tracked:
        offsets.track(offset)
    unfinished = set(tracked)
    previous: int | None = None
    for offset in run.finish_order:
        while not tracked or tracked[-1] < offset:
            tracked.append(run.offsets[len(tracked)])
            offsets.track(tracked[-1])
            unfinished.add(tracked[-1])
        offsets.finish(offset)
        unfinished.discard(offset)
        position = offsets.position
        if position is None:
            problems.append(f"no position after finishing {offset}")
            continue
        if unfinished and position > min(unfinished):
            problems.append(f"position {position} passes unfinished offset {min(unfinished)}")
        if not unfinished and position != tracked[-1] + 1:
            problems.append(f"position {position} is not {tracked[-1] + 1} with all finished")
        if previous is not None and position < previous:
            problems.append(f"position went back from {previous} to {position}")
        if offsets.unfinished != len(unfinished):
            problems.append(f"unfinished is {offsets.unfinished}, not {len(unfinished)}")
        previous = position
    return problems


# --- properties -------------------------------------------------------------------------------


@settings(max_examples=300)
@given(runs())
def test_position_never_passes_unfinished_offset(run: Run) -> None:
    """In any finishing order, position stays at or below the first unfinished offset."""
    assert violations(run) == []


@settings(max_examples=200)
@given(runs())
def test_position_is_last_plus_one_when_all_finished(run: Run) -> None:
    """Once every tracked offset is finished, position is the last offset + 1."""
    offsets = PartitionOffsets()
    for offset in run.offsets:
        offsets.track(offset)
    for offset in run.finish_order:
        offsets.finish(offset)
    remaining = sorted(set(run.offsets) - set(run.finish_order))
    for offset in remaining:
        assert offsets.position == offset
        offsets.finish(offset)
    assert offsets.position == run.offsets[-1] + 1
    assert offsets.unfinished == 0


@settings(max_examples=200)
@given(st.lists(st.integers(min_value=0, max_value=100), min_size=2, max_size=20, unique=True))
def test_tracking_out_of_order_raises(offsets: list[int]) -> None:
    """Tracking an offset not above the last tracked one raises ValueError."""
    highest = max(offsets)
    tracker = PartitionOffsets()
    tracker.track(highest)
    for offset in offsets:
        if offset != highest:
            with pytest.raises(ValueError, match="tracked after"):
                tracker.track(offset)
    assert tracker.unfinished == 1


# --- examples ---------------------------------------------------------------------------------


def test_untracked_partition_has_no_position() -> None:
    """A partition with nothing tracked has no position to commit."""
    assert PartitionOffsets().position is None


def test_position_is_first_tracked_until_it_finishes() -> None:
    """Tracked but unfinished records hold the position at the first of them."""
    offsets = PartitionOffsets()
    for offset in (5, 6, 9):
        offsets.track(offset)
    assert offsets.position == 5
    assert offsets.unfinished == 3


def test_out_of_order_finish_waits_for_the_gap() -> None:
    """Finishing later records first keeps the position at the unfinished one."""
    offsets = PartitionOffsets()
    for offset in (10, 11, 15, 16):
        offsets.track(offset)
    offsets.finish(15)
    offsets.finish(11)
    assert offsets.position == 10
    assert offsets.unfinished == 2
    offsets.finish(10)
    assert offsets.position == 16
    offsets.finish(16)
    assert offsets.position == 17
    assert offsets.unfinished == 0


def test_gaps_are_skipped_once_finished() -> None:
    """Offsets missing from the fetch (compaction, transactions) never hold the position."""
    offsets = PartitionOffsets()
    offsets.track(3)
    offsets.track(100)
    offsets.finish(3)
    assert offsets.position == 100
    offsets.finish(100)
    assert offsets.position == 101


def test_tracking_the_same_offset_twice_raises() -> None:
    """A refetched offset cannot be tracked again."""
    offsets = PartitionOffsets()
    offsets.track(7)
    with pytest.raises(ValueError, match="tracked after"):
        offsets.track(7)


def test_positions_per_partition() -> None:
    """``positions`` has one entry per partition with tracked offsets."""
    tracker = OffsetTracker()
    tracker.partition(TP0).track(0)
    tracker.partition(TP0).track(1)
    tracker.partition(TP0).finish(0)
    tracker.partition(TP1).track(40)
    tracker.partition(TopicPartition("orders", 2))
    assert tracker.positions() == {TP0: 1, TP1: 40}
    assert tracker.unfinished() == 2


def test_partition_is_created_once() -> None:
    """``partition`` returns the same tracker for the same partition."""
    tracker = OffsetTracker()
    assert tracker.partition(TP0) is tracker.partition(TP0)


def test_drop_forgets_a_partition() -> None:
    """A dropped partition has no position and no unfinished records; dropping twice is fine."""
    tracker = OffsetTracker()
    tracker.partition(TP0).track(3)
    tracker.partition(TP1).track(8)
    tracker.drop(TP0)
    tracker.drop(TP0)
    assert tracker.positions() == {TP1: 8}
    assert tracker.unfinished() == 1
    assert tracker.partition(TP0).position is None


# --- the property catches the planted bug ------------------------------------------------------


def test_planted_commit_last_finished_passes_unfinished_offset() -> None:
    """With ``commit_last_finished`` planted, the invariant check flags a concrete run."""
    run = Run(offsets=(0, 1, 2), tracked_up_front=3, finish_order=(2,))
    assert violations(run) == []
    with planted("commit_last_finished"):
        problems = violations(run)
    assert "position 3 passes unfinished offset 0" in problems


def test_property_finds_planted_commit_last_finished() -> None:
    """Hypothesis, searching the same runs, finds a counterexample to the planted bug."""
    with planted("commit_last_finished"):
        counterexample = find(
            runs(),
            lambda run: any("passes unfinished" in problem for problem in violations(run)),
            settings=settings(max_examples=300, database=None),
        )
        assert violations(counterexample)
    assert violations(counterexample) == []
