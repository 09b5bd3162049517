"""``Delivery``: one record on its way through the middleware chain."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import msgspec

# msgspec reads a Struct's annotations only to build a decoder, and none is built for this one
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable  # noqa: TC004

    from eventkit.codecs.wire import WireEvent  # noqa: TC004
    from eventkit.middleware.route import Route  # noqa: TC004
    from eventkit.outcomes import Outcome  # noqa: TC004
    from eventkit.ports import Claim, Record  # noqa: TC004
    from eventkit.routing import HandlerSpec  # noqa: TC004


class LeaseKeeper(Protocol):
    """The idempotency step's hooks into the retry loop of a claimed delivery."""

    def starting(self, delivery: Delivery) -> Awaitable[object]:
        """Count a handler start in the store, before the attempt runs (await the result)."""
        ...

    async def keep(self, delivery: Delivery, seconds: float) -> None:
        """Extend the lease before a wait of ``seconds``."""
        ...


# A Struct rather than a slotted class: its defaults are filled in C, which costs a third of
# twenty attribute stores in ``__init__``. ``eq=False`` keeps identity equality and hashing.
class Delivery(msgspec.Struct, eq=False):
    """The state of one record while the chain runs; middlewares read and fill it in.

    One object per record, created by the worker's lane, so no middleware allocates its own.
    ``event_type`` comes from a header or the decoded envelope; ``event`` and ``payload`` are
    filled by the decode step; ``claim`` by the idempotency step; ``attempt`` counts handler
    attempts of this delivery (1 on the first call).
    """

    record: Record
    #: the deliveries queued behind this one in its lane, for claiming a chunk ahead
    upcoming: Callable[[int], Iterable[Delivery]] | None = None
    event_type: str | None = None
    #: set when a replayed dead letter names its replay (a ``replay_id`` header)
    replay_id: str | None = None
    event: WireEvent | None = None
    spec: HandlerSpec | None = None
    #: where routing sent it (set with ``spec``), so a later dispatch need not look again
    route: Route | None = None
    payload: Any = None
    decoded: bool = False
    error: BaseException | None = None
    idempotency_key: str | None = None
    claim: Claim | None = None
    attempt: int = 0
    first_failure: float | None = None
    last_failure: float | None = None
    #: seconds to wait before a DEFERRED record is tried again (None: the worker's back-off)
    retry_after: float | None = None
    #: True while the record only waits (retry back-off): revoke and shutdown cancel at once
    waiting: bool = False
    #: set when its lane closes: a wait that has not begun yet never begins
    closing: bool = False
    #: a failure already judged final, whose dead letter was not acknowledged yet
    verdict: Exception | None = None
    #: a final outcome whose DONE mark could not be written yet
    unrecorded: Outcome | None = None
    #: the idempotency step's hooks: count each handler start, keep the lease over waits
    lease_keeper: LeaseKeeper | None = None

    def __repr__(self) -> str:
        record = self.record
        return (
            f"<Delivery {record.topic}[{record.partition}]@{record.offset} "
            f"type={self.event_type!r} attempt={self.attempt}>"
        )
