"""``Committer``: explicit, monotonic, self-fenced commits of each partition's finished prefix."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eventkit._crashpoints import crash_point
from eventkit._mutation import is_planted
from eventkit.errors import CommitFailedError

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from eventkit.offsets import OffsetTracker
    from eventkit.ports import Clock, Consumer, TopicPartition
    from eventkit.worker.config import WorkerConfig
    from eventkit.worker.lane import Progress

logger = logging.getLogger("eventkit.worker")


@dataclass(slots=True)
class CommitCounts:
    """Commit results; a timed-out commit is unknown, not failed."""

    succeeded: int = 0
    failed: int = 0
    timed_out: int = 0


class Committer:
    """Commits ``{tp: first unfinished offset}`` for owned partitions, never backwards.

    ``owner_epoch(tp)`` names the ownership epoch of a partition (``None`` once not owned);
    a commit computed under one epoch is not recorded for a partition whose epoch moved on,
    so a worker never commits for a partition it no longer owns. Periodic commits run one at
    a time in the background; revoke and shutdown commit directly after waiting for it.
    """

    def __init__(
        self,
        consumer: Consumer,
        offsets: OffsetTracker,
        *,
        config: WorkerConfig,
        clock: Clock,
        owner_epoch: Callable[[TopicPartition], int | None],
        progress: Progress,
    ) -> None:
        self._consumer = consumer
        self._offsets = offsets
        self._config = config
        self._clock = clock
        self._owner_epoch = owner_epoch
        self.committed: dict[TopicPartition, int] = {}
        self.counts = CommitCounts()
        self._progress = progress
        self._finished_at_commit = 0
        self._due_at = clock.monotonic() + config.commit_interval
        self._in_flight: asyncio.Task[None] | None = None

    def maybe_commit(self, owned: Collection[TopicPartition]) -> None:
        """Start a background commit if one is due and none is running."""
        if self._in_flight is not None and not self._in_flight.done():
            return
        if (
            self._progress.finished - self._finished_at_commit < self._config.commit_every
            and self._clock.monotonic() < self._due_at
        ):
            return
        self._in_flight = asyncio.create_task(self.commit(owned), name="eventkit-commit")

    def in_flight(self) -> list[asyncio.Task[None]]:
        """The running periodic commit, if any (abort cancels it)."""
        task = self._in_flight
        return [task] if task is not None and not task.done() else []

    async def wait_in_flight(self) -> None:
        """Let a running periodic commit finish (bounded by the commit timeout)."""
        task = self._in_flight
        if task is not None and not task.done():
            await asyncio.wait([task], timeout=self._config.commit_timeout)

    def pending(self, partitions: Collection[TopicPartition]) -> dict[TopicPartition, int]:
        """Positions that moved over finished records and past what was committed."""
        pending: dict[TopicPartition, int] = {}
        bare_commit = is_planted("bare_commit")
        for tp in partitions:
            offsets = self._offsets.partition(tp)
            position = offsets.fetched_end if bare_commit else offsets.position
            # the position this owner started at carries no finished work: nothing to commit
            if (
                position is not None
                and position != offsets.first
                and position > self.committed.get(tp, -1)
            ):
                pending[tp] = position
        return pending

    async def commit(self, partitions: Collection[TopicPartition]) -> None:
        """Commit the finished prefix of ``partitions``; errors are counted, never raised."""
        self._finished_at_commit = self._progress.finished
        self._due_at = self._clock.monotonic() + self._config.commit_interval
        offsets = self.pending(partitions)
        if not offsets:
            return
        epochs = {tp: self._owner_epoch(tp) for tp in offsets}
        crash_point("before_commit")
        try:
            await asyncio.wait_for(self._consumer.commit(offsets), self._config.commit_timeout)
        except TimeoutError:
            # unknown, not failed: the next commit carries the same or a later position
            self.counts.timed_out += 1
            logger.warning("offset commit timed out", extra={"offsets": _show(offsets)})
            return
        except CommitFailedError as exc:
            self.counts.failed += 1
            logger.warning("offset commit failed: %s", exc, extra={"offsets": _show(offsets)})
            return
        self.counts.succeeded += 1
        for tp, position in offsets.items():
            if epochs[tp] is not None and self._owner_epoch(tp) == epochs[tp]:
                self.committed[tp] = max(position, self.committed.get(tp, -1))

    def forget(self, tp: TopicPartition) -> None:
        """Drop what is known of a partition that was revoked."""
        self.committed.pop(tp, None)


def _show(offsets: dict[TopicPartition, int]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]={offset}" for tp, offset in offsets.items())
