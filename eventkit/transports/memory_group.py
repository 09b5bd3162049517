"""The in-memory broker's group coordinator: membership, eager rebalances, range assignment.

A join, a leave or a newly created subscribed topic starts a rebalance: a new generation in
which every member must *rejoin* (its consumer runs the revoke listener, then rejoins inside its
next ``getmany``) before the group computes a range assignment and becomes stable. This is
Kafka's eager protocol, barrier included: nobody gets a partition before its previous owner
ran its revoke listener, so offsets committed there are where the next owner starts.

Until a member rejoins it still owns its old partitions, so its commits are accepted, as Kafka
accepts commits of the current generation while the group prepares to rebalance. Members that
do not rejoin within the rebalance timeout are evicted, as Kafka evicts members that miss it;
their later commits are refused.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from eventkit.ports import TopicPartition

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


@dataclass(slots=True)
class GroupMember:
    """The coordinator's view of one member: what it subscribes to and what it owns now."""

    member_id: str
    topics: frozenset[str]
    notify: Callable[[], None]
    owned: frozenset[TopicPartition] = field(default_factory=frozenset)


def range_assign(
    subscriptions: Mapping[str, frozenset[str]], partition_count: Callable[[str], int]
) -> dict[str, frozenset[TopicPartition]]:
    """Kafka's ``RangeAssignor``: per topic, contiguous ranges of partitions to sorted members.

    The first ``count % members`` members (in member id order) get one partition more.
    """
    assigned: dict[str, set[TopicPartition]] = {member: set() for member in subscriptions}
    topics = sorted({topic for topics in subscriptions.values() for topic in topics})
    for topic in topics:
        members = sorted(member for member, wanted in subscriptions.items() if topic in wanted)
        per_member, extra = divmod(partition_count(topic), len(members))
        start = 0
        for index, member in enumerate(members):
            length = per_member + (1 if index < extra else 0)
            assigned[member].update(TopicPartition(topic, p) for p in range(start, start + length))
            start += length
    return {member: frozenset(tps) for member, tps in assigned.items()}


class ConsumerGroup:
    """Membership and eager rebalances of one consumer group (see the module docstring).

    ``partition_count`` answers 0 for topics that do not exist (yet).
    """

    __slots__ = (
        "_expiry",
        "_partition_count",
        "_pending",
        "_rebalance_timeout",
        "generation",
        "group_id",
        "members",
    )

    def __init__(
        self,
        group_id: str,
        *,
        partition_count: Callable[[str], int],
        rebalance_timeout: float,
    ) -> None:
        self.group_id = group_id
        self.generation = 0
        self.members: dict[str, GroupMember] = {}
        self._partition_count = partition_count
        self._rebalance_timeout = rebalance_timeout
        self._pending: set[str] = set()
        self._expiry: asyncio.TimerHandle | None = None

    @property
    def stable(self) -> bool:
        """Whether every member has rejoined and the current assignment is computed."""
        return not self._pending

    def join(self, member: GroupMember) -> None:
        """Add a member and start a rebalance."""
        self.members[member.member_id] = member
        self._rebalance()

    def leave(self, member_id: str) -> None:
        """Remove a member (stop, crash) and start a rebalance of the others."""
        member = self.members.pop(member_id, None)
        if member is None:
            return
        member.owned = frozenset()
        self._pending.discard(member_id)
        self._rebalance()

    def topic_created(self, topic: str) -> None:
        """Rebalance if a member subscribes to ``topic``, as a metadata change does in Kafka."""
        if any(topic in member.topics for member in self.members.values()):
            self._rebalance()

    def needs_rejoin(self, member_id: str) -> bool:
        """Whether the member must revoke and rejoin for the current generation."""
        return member_id in self._pending

    def rejoin(self, member_id: str) -> None:
        """The member gave up its partitions; the last rejoin completes the rebalance."""
        if member_id not in self._pending:
            return
        self._pending.discard(member_id)
        self.members[member_id].owned = frozenset()
        if not self._pending:
            self._complete()

    def assignment_of(self, member_id: str) -> frozenset[TopicPartition] | None:
        """The member's partitions once the group is stable; ``None`` while it rebalances."""
        member = self.members.get(member_id)
        if member is None or not self.stable:
            return None
        return member.owned

    def owns(self, member_id: str, tp: TopicPartition) -> bool:
        """Whether a commit of ``tp`` by this member is accepted (the broker-side fence)."""
        member = self.members.get(member_id)
        return member is not None and tp in member.owned

    def notify_topic(self, topic: str) -> None:
        """Wake the members subscribed to ``topic`` (new records)."""
        for member in self.members.values():
            if topic in member.topics:
                member.notify()

    def _rebalance(self) -> None:
        self.generation += 1
        self._pending = set(self.members)
        self._cancel_expiry()
        if not self._pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # outside a loop nobody can be waiting: no eviction timer needed
            loop = None
        if loop is not None:
            self._expiry = loop.call_later(self._rebalance_timeout, self._expire, self.generation)
        for member in self.members.values():
            member.notify()

    def _expire(self, generation: int) -> None:
        if generation != self.generation or self.stable:
            return
        for member_id in sorted(self._pending):
            # evicted: a later getmany of its consumer joins again as a new member
            evicted = self.members.pop(member_id)
            evicted.owned = frozenset()
            evicted.notify()
        self._pending.clear()
        self._complete()

    def _complete(self) -> None:
        self._cancel_expiry()
        subscriptions = {member_id: m.topics for member_id, m in self.members.items()}
        assignment = range_assign(subscriptions, self._partition_count)
        for member_id, member in self.members.items():
            member.owned = assignment[member_id]
            member.notify()

    def _cancel_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
