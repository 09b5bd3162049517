"""The worker runner: real signals to this process, exit codes for every way a worker ends."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from typing import TYPE_CHECKING, Any

from eventkit import EventApp, EventPublisher
from eventkit.errors import ConsumerStartError
from eventkit.transports import Transport, memory_broker
from eventkit.worker.runner import ExitCode, run

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

    from eventkit.ports import RebalanceListener, Record, TopicPartition
    from eventkit.transports.memory import MemoryBroker
    from eventkit.transports.memory_consumer import MemoryConsumer


def make_app() -> tuple[EventApp, list[int]]:
    app = EventApp("runner", idempotency=False)
    handled: list[int] = []

    @app.handler("N", topic="numbers")
    async def handle(event: dict[str, Any]) -> None:
        handled.append(event["n"])

    return app, handled


def numbers_broker() -> tuple[MemoryBroker, str]:
    """A fresh named in-memory broker with the app's topic and its dead-letter topic."""
    name = f"runner-{uuid.uuid4().hex}"
    broker = memory_broker(name)
    broker.create_topic("numbers", 1)
    broker.create_topic("numbers.dlq", 1)
    return broker, name


def transport_with(consumer: Any) -> Transport:
    broker, _ = numbers_broker()
    return Transport(consumer=consumer, publisher=broker.publisher(), admin=broker)


class HangingStart:
    """A consumer whose group join never completes (a coordinator that does not answer)."""

    def __init__(self) -> None:
        self.cancelled = False

    async def start(self, topics: Collection[str], listener: RebalanceListener) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise

    async def stop(self) -> None: ...


class RefusingStart(HangingStart):
    async def start(self, topics: Collection[str], listener: RebalanceListener) -> None:
        raise ConsumerStartError("cannot join group 'runner-consumer' on k:9092")


class DyingFetch:
    """A consumer that joins, then fails its second poll (a broken client)."""

    def __init__(self, inner: MemoryConsumer) -> None:
        self._inner = inner
        self._polls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def getmany(
        self,
        timeout: float,  # noqa: ASYNC109
        max_records: int,
    ) -> Mapping[TopicPartition, Sequence[Record]]:
        self._polls += 1
        if self._polls > 1:
            raise RuntimeError("the client broke")
        return await self._inner.getmany(timeout, max_records)


def signal_soon(delay: float = 0.2) -> None:
    """Send this process SIGTERM after ``delay`` seconds (the runner handles it)."""
    asyncio.get_running_loop().call_later(delay, os.kill, os.getpid(), signal.SIGTERM)


async def test_sigterm_while_joining_the_group_ends_the_worker_at_once() -> None:
    """A signal during a start that never completes cancels it: exit 0, nothing consumed."""
    app, _ = make_app()
    consumer = HangingStart()
    transport = transport_with(consumer)

    signal_soon()
    code = await asyncio.wait_for(run(app, transport, store=None), 5.0)

    assert code == ExitCode.CLEAN
    assert consumer.cancelled
    assert not app.running


async def test_a_start_that_cannot_reach_the_broker_exits_2() -> None:
    """A connection failure at start-up is exit code 2, like a bad setting, not a crash."""
    app, _ = make_app()
    transport = transport_with(RefusingStart())

    code = await asyncio.wait_for(run(app, transport, store=None), 5.0)

    assert code == ExitCode.CONFIGURATION
    assert not app.running


async def test_a_dead_consume_loop_exits_1() -> None:
    """When the fetch loop dies the runner stops the app and returns CONSUMER_DIED."""
    app, _ = make_app()
    broker, _ = numbers_broker()
    consumer = DyingFetch(broker.consumer(app.group_id))
    transport = Transport(consumer=consumer, publisher=broker.publisher(), admin=broker)

    code = await asyncio.wait_for(run(app, transport, store=None), 5.0)

    assert code == ExitCode.CONSUMER_DIED
    assert not app.running


async def test_sigterm_drains_and_exits_0_after_handling_what_arrived() -> None:
    """A running worker handles what was published, then SIGTERM stops it cleanly."""
    app, handled = make_app()
    broker, name = numbers_broker()
    sender = broker.publisher()
    await sender.start()
    await EventPublisher(sender, source_service="test").publish("numbers", "N", {"n": 1})

    signal_soon(0.5)
    code = await asyncio.wait_for(run(app, f"memory://{name}", store=None), 5.0)

    assert code == ExitCode.CLEAN
    assert handled == [1]
    assert broker.committed(app.group_id, broker.partitions_for("numbers")[0]) == 1
