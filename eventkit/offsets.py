"""``OffsetTracker``: the contiguous finished prefix of each partition (pure, no I/O)."""

from __future__ import annotations

import operator
from collections import deque
from typing import TYPE_CHECKING

from eventkit._mutation import is_planted

if TYPE_CHECKING:
    from eventkit.ports import TopicPartition


class PartitionOffsets:
    """Finished offsets of one partition and the position that is safe to commit.

    Offsets are tracked in fetch order (increasing, possibly with gaps) and may finish in any
    order. ``position`` is the first unfinished offset, or the last tracked offset + 1 when
    none is unfinished: committing it never passes a record that is not final.
    """

    __slots__ = ("_finished_out_of_order", "_last_finished", "_next", "_unfinished", "first")

    def __init__(self) -> None:
        #: the first offset tracked: where this owner started reading the partition
        self.first: int | None = None
        self._unfinished: deque[int] = deque()
        self._finished_out_of_order: set[int] = set()
        self._next: int | None = None
        self._last_finished: int | None = None

    def track(self, offset: int) -> None:
        """Record a fetched offset; offsets must arrive in increasing order."""
        if self._next is not None and offset < self._next:
            raise ValueError(f"offset {offset} tracked after {self._next - 1}")
        if self.first is None:
            self.first = offset
        self._unfinished.append(offset)
        self._next = offset + 1

    def track_many(self, offsets: list[int]) -> None:
        """Record fetched offsets, in increasing order, at once."""
        if not offsets:
            return
        # map with operator.lt runs in C: the check costs little next to the records
        if (self._next is not None and offsets[0] < self._next) or not all(
            map(operator.lt, offsets, offsets[1:])
        ):
            raise ValueError(f"offsets must increase past {self._next}: {offsets[:10]}...")
        if self.first is None:
            self.first = offsets[0]
        self._unfinished.extend(offsets)
        self._next = offsets[-1] + 1

    def finish(self, offset: int) -> None:
        """Mark a tracked offset final; the position moves over any finished prefix."""
        unfinished = self._unfinished
        self._last_finished = offset
        if unfinished and unfinished[0] == offset:
            # the in-order case, which sequential lanes always take, costs one popleft
            unfinished.popleft()
            done = self._finished_out_of_order
            while done and unfinished and unfinished[0] in done:
                done.discard(unfinished.popleft())
            return
        self._finished_out_of_order.add(offset)

    @property
    def position(self) -> int | None:
        """The offset to commit (the next to read), or ``None`` if nothing was tracked."""
        if is_planted("commit_last_finished") and self._last_finished is not None:
            return self._last_finished + 1
        if self._unfinished:
            return self._unfinished[0]
        return self._next

    @property
    def fetched_end(self) -> int | None:
        """The last tracked offset + 1, finished or not."""
        return self._next

    @property
    def unfinished(self) -> int:
        """How many tracked offsets are not final yet."""
        return len(self._unfinished) - len(self._finished_out_of_order)


class OffsetTracker:
    """``PartitionOffsets`` for every partition this worker owns."""

    __slots__ = ("_partitions",)

    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, PartitionOffsets] = {}

    def partition(self, tp: TopicPartition) -> PartitionOffsets:
        """The tracker of one partition, created on first use."""
        offsets = self._partitions.get(tp)
        if offsets is None:
            offsets = self._partitions[tp] = PartitionOffsets()
        return offsets

    def positions(self) -> dict[TopicPartition, int]:
        """The commit position of every partition that has one."""
        result: dict[TopicPartition, int] = {}
        for tp, offsets in self._partitions.items():
            position = offsets.position
            if position is not None:
                result[tp] = position
        return result

    def unfinished(self) -> int:
        """How many tracked records are not final, over all partitions."""
        return sum(offsets.unfinished for offsets in self._partitions.values())

    def drop(self, tp: TopicPartition) -> None:
        """Forget a partition (after it was revoked and its prefix committed)."""
        self._partitions.pop(tp, None)
