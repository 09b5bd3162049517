"""``Delivery``: one record on its way through the middleware chain."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from eventkit.codecs.wire import WireEvent
    from eventkit.middleware.route import Route
    from eventkit.outcomes import Outcome
    from eventkit.ports import Claim, Record
    from eventkit.routing import HandlerSpec


class LeaseKeeper(Protocol):
    """The idempotency step's hooks into the retry loop of a claimed delivery."""

    def starting(self, delivery: Delivery) -> Awaitable[object]:
        """Count a handler start in the store, before the attempt runs (await the result)."""
        ...

    async def keep(self, delivery: Delivery, seconds: float) -> None:
        """Extend the lease before a wait of ``seconds``."""
        ...

    async def flush(self) -> None:
        """Write the queued DONE marks, and wait for those being written by other calls;
        raises ``StoreUnavailableError`` (the marks stay queued) if the store is unreachable."""
        ...


class Delivery:
    """The state of one record while the chain runs; middlewares read and fill it in.

    One object per record, created by the worker's lane, so no middleware allocates its own.
    ``event_type`` comes from a header or the decoded envelope; ``event`` and ``payload`` are
    filled by the decode step (or the fast route, which also sets ``route``); ``claim`` by the
    idempotency step; ``attempt`` counts handler attempts of this delivery (1 on the first
    call). ``upcoming`` gives the deliveries queued behind this one in its lane, for claiming
    a chunk ahead.
    """

    __slots__ = (
        "attempt",
        "claim",
        "closing",
        "decoded",
        "error",
        "event",
        "event_type",
        "first_failure",
        "idempotency_key",
        "last_failure",
        "lease_keeper",
        "on_recorded",
        "payload",
        "record",
        "replay_id",
        "retry_after",
        "route",
        "spec",
        "unrecorded",
        "upcoming",
        "verdict",
        "waiting",
    )

    # a slotted class: the idempotency path sets a dozen fields per record, and a slot store
    # is cheaper than a msgspec Struct's, which outweighs its cheaper creation
    def __init__(
        self, record: Record, upcoming: Callable[[int], Iterable[Delivery]] | None = None
    ) -> None:
        self.record = record
        self.upcoming = upcoming
        self.event_type: str | None = None
        # set when a replayed dead letter names its replay (a ``replay_id`` header)
        self.replay_id: str | None = None
        self.event: WireEvent | None = None
        self.spec: HandlerSpec | None = None
        # where routing sent it (set with ``spec``), so a later dispatch need not look again
        self.route: Route | None = None
        self.payload: Any = None
        self.decoded: bool = False
        self.error: BaseException | None = None
        self.idempotency_key: str | None = None
        self.claim: Claim | None = None
        self.attempt: int = 0
        self.first_failure: float | None = None
        self.last_failure: float | None = None
        # seconds to wait before a DEFERRED record is tried again (None: the worker's back-off)
        self.retry_after: float | None = None
        # True while the record only waits (retry back-off): revoke and shutdown cancel at once
        self.waiting: bool = False
        # set when its lane closes: a wait that has not begun yet never begins
        self.closing: bool = False
        # a failure already judged final, whose dead letter was not acknowledged yet
        self.verdict: Exception | None = None
        # a final outcome whose DONE mark is not written yet (queued, or the store was down)
        self.unrecorded: Outcome | None = None
        # the idempotency step's hooks: count each handler start, keep the lease over waits
        self.lease_keeper: LeaseKeeper | None = None
        # called once its queued DONE mark is written: the lane holding it finishes it then
        self.on_recorded: Callable[[], None] | None = None

    def __repr__(self) -> str:
        record = self.record
        return (
            f"<Delivery {record.topic}[{record.partition}]@{record.offset} "
            f"type={self.event_type!r} attempt={self.attempt}>"
        )
