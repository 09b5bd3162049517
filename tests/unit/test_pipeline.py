"""``compose``: middlewares fold around the handler, the first one outermost."""

from __future__ import annotations

from dataclasses import dataclass

from eventkit import Delivery, Middleware, Next, Outcome, compose


@dataclass(frozen=True, slots=True)
class FakeRecord:
    """The smallest record the ``Record`` port accepts."""

    topic: str = "orders"
    partition: int = 0
    offset: int = 0
    timestamp: int = 0
    key: bytes | None = None
    value: bytes | None = b"{}"
    headers: tuple[tuple[str, bytes], ...] = ()


def tracing(name: str, trace: list[str]) -> Middleware:
    """A middleware that notes when it enters and leaves around the rest of the chain."""

    def wrap(next_: Next) -> Next:
        async def run(delivery: Delivery) -> Outcome:
            trace.append(f"{name}:enter")
            outcome = await next_(delivery)
            trace.append(f"{name}:leave")
            return outcome

        return run

    return wrap


def recording_handler(trace: list[str], outcome: Outcome = Outcome.HANDLED) -> Next:
    """A handler ``Next`` that notes that it ran."""

    async def handle(delivery: Delivery) -> Outcome:
        trace.append("handler")
        return outcome

    return handle


async def test_first_middleware_runs_outermost_and_handler_last() -> None:
    """``middlewares[0]`` enters first and leaves last; the handler runs innermost."""
    trace: list[str] = []
    chain = compose(
        [tracing("a", trace), tracing("b", trace), tracing("c", trace)],
        recording_handler(trace),
    )
    outcome = await chain(Delivery(FakeRecord()))
    assert outcome is Outcome.HANDLED
    assert trace == ["a:enter", "b:enter", "c:enter", "handler", "c:leave", "b:leave", "a:leave"]


async def test_handler_outcome_passes_through_middlewares() -> None:
    """The outcome the handler returns is what the composed chain returns."""
    trace: list[str] = []
    chain = compose([tracing("a", trace)], recording_handler(trace, Outcome.DEAD_LETTERED))
    assert await chain(Delivery(FakeRecord())) is Outcome.DEAD_LETTERED


def test_empty_middleware_list_returns_handler_itself() -> None:
    """With no middlewares ``compose`` returns the handler unchanged."""
    handler = recording_handler([])
    assert compose([], handler) is handler
    assert compose((), handler) is handler


async def test_middleware_can_short_circuit_with_an_outcome() -> None:
    """A middleware that returns without calling next stops the chain: later steps never run."""
    trace: list[str] = []

    def skip_tombstones(next_: Next) -> Next:
        async def run(delivery: Delivery) -> Outcome:
            if delivery.record.value is None:
                return Outcome.SKIPPED
            return await next_(delivery)

        return run

    chain = compose(
        [tracing("outer", trace), skip_tombstones, tracing("inner", trace)],
        recording_handler(trace),
    )
    assert await chain(Delivery(FakeRecord(value=None))) is Outcome.SKIPPED
    assert trace == ["outer:enter", "outer:leave"]

    trace.clear()
    assert await chain(Delivery(FakeRecord())) is Outcome.HANDLED
    assert trace == ["outer:enter", "inner:enter", "handler", "inner:leave", "outer:leave"]


async def test_middlewares_see_the_same_delivery_object() -> None:
    """Every step receives the one ``Delivery``, so what a middleware fills in reaches the rest."""

    def set_payload(next_: Next) -> Next:
        async def run(delivery: Delivery) -> Outcome:
            delivery.payload = {"order_id": "o-1"}
            return await next_(delivery)

        return run

    seen: list[object] = []

    async def handler(delivery: Delivery) -> Outcome:
        seen.append(delivery.payload)
        return Outcome.HANDLED

    delivery = Delivery(FakeRecord())
    await compose([set_payload], handler)(delivery)
    assert seen == [{"order_id": "o-1"}]
    assert delivery.payload == {"order_id": "o-1"}


async def test_compose_wraps_at_compose_time_once() -> None:
    """Middlewares are applied once when composing, not again on every delivery."""
    wraps: list[str] = []

    def counting(next_: Next) -> Next:
        wraps.append("wrapped")
        return next_

    chain = compose([counting, counting], recording_handler([]))
    for offset in range(3):
        await chain(Delivery(FakeRecord(offset=offset)))
    assert wraps == ["wrapped", "wrapped"]
