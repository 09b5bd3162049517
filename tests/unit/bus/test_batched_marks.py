"""Prepaid starts and queued DONE marks: a chunk of records costs one store call, and no
record is final (or committed) before its DONE mark is written."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING

from eventkit import EventApp, EventContext, Outcome
from eventkit.fakeclock import FakeClock
from eventkit.idempotency import InMemoryIdempotencyStore
from eventkit.keys import event_key, namespace_for
from eventkit.ports import ClaimRequest, ClaimStatus
from tests.unit.bus.models import OrderPlaced

if TYPE_CHECKING:
    from collections.abc import Sequence

    from eventkit.ports import Claim, Completion, Settled


class CountingStore(InMemoryIdempotencyStore):
    """The in-memory store, counting its calls by name."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.calls: Counter[str] = Counter()

    async def claim(self, requests: Sequence[ClaimRequest], lease_seconds: float) -> list[Claim]:
        self.calls["claim"] += 1
        return await super().claim(requests, lease_seconds)

    async def settle(
        self,
        completions: Sequence[Completion],
        requests: Sequence[ClaimRequest],
        lease_seconds: float,
    ) -> Settled:
        self.calls["settle"] += 1
        # the marks are written through complete(), which must not count as a call of its own
        self.calls["complete"] -= len(completions)
        return await super().settle(completions, requests, lease_seconds)

    async def start(self, key: str, token: str, *, prepaid_used: bool = False) -> int:
        self.calls["start"] += 1
        return await super().start(key, token, prepaid_used=prepaid_used)

    async def complete(self, *args: object, **kwargs: object) -> bool:
        self.calls["complete"] += 1
        return await super().complete(*args, **kwargs)  # type: ignore[arg-type]

    async def claim_for_test(self, app: EventApp, event_id: str) -> Claim:
        """What a new claim of the event's key answers now (not counted)."""
        key = event_key(namespace_for(app.service, app.group_id), "ORDER_PLACED", event_id)
        [answer] = await super().claim([ClaimRequest(key)], 1.0)
        return answer


async def test_a_run_of_records_makes_no_start_or_done_call_of_its_own() -> None:
    """200 records on one partition: no per-record ``start`` or ``complete`` call; the
    claims and the DONE marks share a handful of calls, and every mark is written."""
    clock = FakeClock()
    store = CountingStore(clock)
    app = EventApp("batched")
    handled: list[str] = []

    @app.handler("ORDER_PLACED", topic="orders")
    async def placed(event: OrderPlaced) -> None:
        handled.append(event.order_id)

    async with app.testing(partitions=1, clock=clock, store=store) as bus:
        ids = [
            (
                await bus.publish("orders", "ORDER_PLACED", OrderPlaced(order_id=str(n), total=n))
            ).event_id
            for n in range(200)
        ]
        await bus.run_until_idle()
        assert len(handled) == 200
        assert bus.committed("orders", 0) == 200
        calls = dict(store.calls)
        answers = [await store.claim_for_test(app, event_id) for event_id in ids]
    assert calls.get("start", 0) == 0
    assert calls.get("complete", 0) == 0
    assert calls.get("claim", 0) + calls.get("settle", 0) <= 10, calls
    assert {answer.status for answer in answers} == {ClaimStatus.DUPLICATE}
    assert {answer.attempts for answer in answers} == {1}


async def test_a_running_record_holds_the_marks_before_it_no_longer_than_a_third_of_a_lease() -> (
    None
):
    """Record 0 done, record 1 running for minutes: record 0's mark is written by the lease
    keeper within a third of a lease, so record 0 is final (committable) while record 1
    still runs."""
    app = EventApp("held-up", lease_seconds=30.0)
    release = asyncio.Event()
    started: list[int] = []

    @app.handler("ORDER_PLACED", topic="orders")
    async def placed(event: OrderPlaced) -> None:
        started.append(int(event.total))
        if event.total == 1:
            await release.wait()

    async with app.testing(partitions=1) as bus:
        for n in range(2):
            await bus.publish("orders", "ORDER_PLACED", OrderPlaced(order_id=str(n), total=n))
        await bus.run_until(lambda: started == [0, 1])
        begun = bus.clock.monotonic()
        assert bus.app.worker.unfinished() == 2, "record 0 waits for its mark"
        await bus.run_until(lambda: bus.app.worker.unfinished() == 1)
        assert bus.clock.monotonic() - begun <= 10.0  # a third of the 30 s lease
        release.set()
        await bus.run_until_idle()
        assert bus.committed("orders", 0) == 2
        assert started == [0, 1]


async def test_a_crash_before_the_mark_is_written_runs_the_record_again_as_attempt_two() -> None:
    """A worker killed after record 0's handler but before its queued mark was written: the
    record is not committed, the next worker runs it again once the lease expires, and that
    run is attempt 2 (the first, prepaid start is charged as uncertain)."""
    app = EventApp("crash-before-mark", lease_seconds=30.0)
    attempts: list[tuple[int, int]] = []
    blocked = asyncio.Event()
    never = asyncio.Event()

    @app.handler("ORDER_PLACED", topic="orders")
    async def placed(event: OrderPlaced, ctx: EventContext) -> None:
        attempts.append((int(event.total), ctx.attempt))
        if event.total == 1 and not blocked.is_set():
            blocked.set()
            await never.wait()  # the worker dies in here

    async with app.testing(partitions=1) as bus:
        for n in range(2):
            await bus.publish("orders", "ORDER_PLACED", OrderPlaced(order_id=str(n), total=n))
        await bus.run_until(blocked.is_set)
        await bus.crash()
        await bus.run_until_idle()
        assert attempts == [(0, 1), (1, 1), (0, 2), (1, 2)]
        assert bus.committed("orders", 0) == 2
        assert bus.outcomes[Outcome.HANDLED] == 3  # 0 twice (once per worker), 1 once


async def test_a_graceful_restart_leaves_no_queued_mark_behind() -> None:
    """A graceful restart while a mark is queued behind a running record: the drain writes
    the mark, so the next worker finds the record done and does not run it again."""
    app = EventApp("drain-writes-marks", lease_seconds=30.0)
    runs: Counter[int] = Counter()
    hold = asyncio.Event()

    @app.handler("ORDER_PLACED", topic="orders")
    async def placed(event: OrderPlaced) -> None:
        runs[int(event.total)] += 1
        if event.total == 1 and runs[1] == 1:
            await hold.wait()

    async with app.testing(partitions=1) as bus:
        for n in range(2):
            await bus.publish("orders", "ORDER_PLACED", OrderPlaced(order_id=str(n), total=n))
        await bus.run_until(lambda: runs[1] == 1)
        assert bus.committed("orders", 0) in (None, 0), "record 0 waits for its mark"
        hold.set()
        await bus.restart()
        await bus.run_until_idle()
        assert runs == {0: 1, 1: 1}
        assert bus.committed("orders", 0) == 2
