"""The ports the core depends on; transports, stores and clocks are adapters behind them.

The core never imports a client library: a Kafka consumer, a Redis store or a fake clock only
has to satisfy these protocols.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

import msgspec

from eventkit.outcomes import Outcome

if TYPE_CHECKING:
    from eventkit.idempotency.effects import Effect

Headers = Sequence[tuple[str, bytes]]


class TopicPartition(NamedTuple):
    """One partition of one topic; equal to aiokafka's ``TopicPartition`` with the same fields."""

    topic: str
    partition: int


class Record(Protocol):
    """A record as the transport delivered it: raw bytes, never deserialized by the client."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int:
        """Milliseconds since the epoch, as the broker stamped it."""
        ...

    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Headers: ...


class RebalanceListener(Protocol):
    """Called by a consumer when the group moves partitions to or away from it."""

    async def on_partitions_revoked(self, revoked: frozenset[TopicPartition]) -> None: ...
    async def on_partitions_assigned(self, assigned: frozenset[TopicPartition]) -> None: ...


class Consumer(Protocol):
    """A group member that fetches raw records and commits explicit offsets.

    Offsets passed to ``commit`` are the *next* offset to read (the first unfinished one).
    Rebalance listener calls happen inside ``getmany``, as with Kafka clients.
    """

    async def start(self, topics: Collection[str], listener: RebalanceListener) -> None: ...
    async def stop(self) -> None: ...
    # a bounded poll, as the Kafka client's: cancelling it from outside could lose a fetch
    async def getmany(
        self,
        timeout: float,  # noqa: ASYNC109
        max_records: int,
    ) -> Mapping[TopicPartition, Sequence[Record]]: ...
    def assignment(self) -> frozenset[TopicPartition]: ...
    def pause(self, partitions: Iterable[TopicPartition]) -> None: ...
    def resume(self, partitions: Iterable[TopicPartition]) -> None: ...
    def seek(self, partition: TopicPartition, offset: int) -> None: ...
    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None: ...
    async def committed(self, partition: TopicPartition) -> int | None: ...


class OutgoingRecord(NamedTuple):
    """One raw record to send with ``Publisher.send_many``."""

    topic: str
    value: bytes
    key: bytes | None = None
    headers: Headers = ()


class Publisher(Protocol):
    """Sends raw records and returns once the broker acknowledged them.

    Raises ``PublishError`` when the send was not acknowledged, and
    ``PublisherNotStartedError`` before ``start`` or after ``stop``.
    """

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def send(
        self, topic: str, value: bytes, *, key: bytes | None = None, headers: Headers = ()
    ) -> None: ...
    async def send_many(self, records: Sequence[OutgoingRecord]) -> None:
        """Send all of ``records`` (pipelined where the transport can); return once all are
        acknowledged, or raise ``PublishError`` once all settled and any failed."""
        ...


class TopicAdmin(Protocol):
    """The start-up check of a transport's topics (R1)."""

    async def ensure_topics(self, topics: Collection[str]) -> None:
        """Return once every topic exists (created first if the transport is allowed to);
        raise ``ConfigurationError`` naming the missing ones otherwise."""
        ...


class ClaimStatus(enum.Enum):
    """The answer of the idempotency store to a claim."""

    CLAIMED = "claimed"
    DUPLICATE = "duplicate"
    BUSY = "busy"

    # members are singletons: identity hashing is exact and skips Enum's Python-level hash
    __hash__ = object.__hash__


# Claim and ClaimRequest are made per record: frozen msgspec Structs, created in C (a quarter
# of a dataclass's cost) and untracked by the garbage collector (they hold no cycles).


class ClaimRequest(msgspec.Struct, frozen=True, gc=False):
    """A request to claim one idempotency key; ``replay_id`` marks a replayed dead letter."""

    key: str
    replay_id: str | None = None


class Claim(msgspec.Struct, frozen=True, gc=False):
    """The store's answer for one key.

    - ``CLAIMED``: ``token`` is the lease token every later call must present.
    - ``DUPLICATE``: ``outcome`` and ``payload_hash`` are those recorded when it was done.
    - ``BUSY``: another live lease holds the key; ``retry_after`` is the seconds it has left.
    ``attempts`` counts handler starts recorded so far for the key.
    """

    status: ClaimStatus
    token: str | None = None
    outcome: Outcome | None = None
    payload_hash: str | None = None
    retry_after: float = 0.0
    attempts: int = 0
    #: the claim counted the first handler start already (a key never started before), so
    #: that start needs no ``start`` call while the lease is fresh
    prepaid: bool = False


class Completion(msgspec.Struct, frozen=True, gc=False):
    """A DONE mark to write with ``IdempotencyStore.settle``."""

    key: str
    token: str
    outcome: Outcome
    payload_hash: str
    ttl_seconds: float


class Settled(NamedTuple):
    """The answer of ``IdempotencyStore.settle``: whether each DONE mark was written (in
    order), and the claims (in request order)."""

    recorded: list[bool]
    claims: list[Claim]


class IdempotencyStore(Protocol):
    """The lease state machine of the reliability contract (R4).

    Token-checked calls return ``False`` (or raise ``LeaseLostError`` for ``start``) when the
    token no longer holds the key. Unreachable stores raise ``StoreUnavailableError``.

    A claim of a key never started before prepays its first start (``Claim.prepaid``): the
    start is counted at once and stays provisional until a ``start``, a DONE mark or a
    ``release(..., started=True)`` confirms it; a plain ``release`` takes it back. A lease
    that expires with its prepaid start unconfirmed leaves that start uncertain: the next
    claim reports only the starts known to have happened, and the next ``start`` counts one
    more, as if the uncertain start had run.
    """

    async def claim(self, requests: Sequence[ClaimRequest], lease_seconds: float) -> list[Claim]:
        """Claim every key in one round trip; answers are in request order."""
        ...

    async def settle(
        self,
        completions: Sequence[Completion],
        requests: Sequence[ClaimRequest],
        lease_seconds: float,
    ) -> Settled:
        """Write DONE marks, then claim keys, in one round trip (each mark exactly as
        ``complete`` writes it, each claim as ``claim`` answers it)."""
        ...

    async def start(self, key: str, token: str, *, prepaid_used: bool = False) -> int:
        """Count one handler start (or confirm the claim's prepaid one), renew the lease to
        the length it was claimed for, and return the attempts including this one.

        ``prepaid_used``: an earlier attempt ran on the prepaid start with no ``start`` call,
        so this start is counted on top of it.
        """
        ...

    async def renew(self, key: str, token: str, lease_seconds: float) -> bool: ...
    async def complete(
        self, key: str, token: str, outcome: Outcome, payload_hash: str, ttl_seconds: float
    ) -> bool:
        """Mark the key done with its outcome (``HANDLED`` or ``DEAD_LETTERED``)."""
        ...

    async def release(self, key: str, token: str, *, started: bool = False) -> bool:
        """Give the key up so that a later delivery claims it again.

        A prepaid start not confirmed yet is taken back, unless ``started`` says the
        handler ran on it (it ran without a ``start`` call).
        """
        ...


class EffectsStore(IdempotencyStore, Protocol):
    """An idempotency store that can apply an atomic-effect handler's staged writes with its
    DONE mark, as one atomic unit (R4, atomic-effect mode).

    ``supports_effects`` is ``False`` where that cannot hold (Redis Cluster): atomic-effect
    handlers are then refused at start-up.
    """

    supports_effects: bool

    async def complete_with_effects(
        self,
        key: str,
        token: str,
        payload_hash: str,
        ttl_seconds: float,
        effects: Sequence[Effect],
    ) -> bool:
        """Apply ``effects`` and mark the key done as ``HANDLED``, both or neither.

        ``False``, nothing applied, if ``token`` lost the lease; ``EffectsRefusedError``,
        nothing applied, for writes that cannot all be applied.
        """
        ...


class Clock(Protocol):
    """Time, injected so retry and lease tests run instantly on a fake clock."""

    def now(self) -> float:
        """Wall-clock seconds since the epoch (for timestamps)."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never go backwards (for durations)."""
        ...

    async def sleep(self, seconds: float) -> None: ...
