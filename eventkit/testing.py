"""``TestBus``: the app's real dispatcher and worker over an in-memory broker and fake clock.

    async with app.testing() as bus:
        await bus.publish("content-events", "CONTENT_VALIDATION_REQUESTED", payload)
        await bus.run_until_idle()
        assert bus.outcomes[Outcome.HANDLED] == 1

Retry back-off and lease waits run on a ``FakeClock`` that ``run_until_idle`` moves forward
whenever nothing else can make progress, so tests of retries and expiring leases take no time.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eventkit.fakeclock import FakeClock
from eventkit.idempotency import InMemoryIdempotencyStore
from eventkit.ports import TopicPartition
from eventkit.publisher import EventPublisher
from eventkit.transports.memory import MemoryBroker, MemoryConsumer, StoredRecord

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import TracebackType

    from eventkit.app import EventApp
    from eventkit.delivery import Delivery
    from eventkit.envelope import EventEnvelope
    from eventkit.middleware.observe import RecordObserver
    from eventkit.outcomes import Outcome
    from eventkit.ports import Headers

__all__ = ["FakeClock", "OutcomeLog", "RecordResult", "TestBus"]


@dataclass(frozen=True, slots=True)
class RecordResult:
    """One record that reached an outcome (a deferred record appears each time it defers)."""

    topic: str
    partition: int
    offset: int
    event_type: str | None
    event_id: str | None
    outcome: Outcome
    attempts: int
    error: BaseException | None


class OutcomeLog:
    """A ``RecordObserver`` that keeps the outcome of every record the dispatcher finished."""

    def __init__(self) -> None:
        self.results: list[RecordResult] = []

    def record_finished(self, delivery: Delivery, outcome: Outcome, seconds: float) -> None:
        record = delivery.record
        event = delivery.event
        self.results.append(
            RecordResult(
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                event_type=delivery.event_type,
                event_id=event.event_id if event is not None else None,
                outcome=outcome,
                attempts=delivery.attempt,
                error=delivery.error,
            )
        )


class TestBus:
    """Runs an app in memory: publish, run until idle, then inspect what happened.

    The broker keeps every topic (the app's, their dead-letter topics and whatever handlers
    publish to), the store survives ``crash()`` as Redis would, and the clock is fake.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        app: EventApp,
        *,
        partitions: int = 3,
        clock: FakeClock | None = None,
        store: InMemoryIdempotencyStore | None = None,
        seed: int = 0,
        idle_timeout: float = 10.0,
        observers: Sequence[RecordObserver] = (),
    ) -> None:
        self.app = app
        self.clock = clock or FakeClock()
        self.broker = MemoryBroker(
            default_partitions=partitions, now_ms=lambda: int(self.clock.now() * 1000)
        )
        self.store = store if store is not None else InMemoryIdempotencyStore(self.clock)
        self._rng = random.Random(seed)
        self._idle_timeout = idle_timeout
        self._recorder = OutcomeLog()
        self._observers = (self._recorder, *observers)
        self._producer = self.broker.publisher()
        self._publisher = EventPublisher(self._producer, source_service="test-bus")
        self._consumer: MemoryConsumer | None = None

    async def __aenter__(self) -> TestBus:
        for topic in sorted(self.app.topics() | self.app.dead_letter_topics()):
            self.broker.create_topic(topic)
        await self._producer.start()
        await self._start_app()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.app.running:
            await self.app.stop()
        await self._producer.stop()

    async def _start_app(self) -> None:
        self._consumer = self.broker.consumer(self.app.group_id)
        await self.app.start(
            consumer=self._consumer,
            publisher=self.broker.publisher(),
            store=self.store,
            clock=self.clock,
            rng=self._rng,
            observers=self._observers,
        )

    @property
    def consumer(self) -> MemoryConsumer:
        """The running worker's consumer (a new one after ``crash`` or ``restart``)."""
        if self._consumer is None:
            raise RuntimeError("the bus is not running")
        return self._consumer

    # -- input -----------------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        event_type: str,
        payload: Any,
        *,
        key: bytes | str | None = None,
        correlation_id: str | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> EventEnvelope[Any]:
        """Publish an event as another service would; returns its envelope."""
        return await self._publisher.publish(
            topic, event_type, payload, key=key, correlation_id=correlation_id, headers=headers
        )

    async def publish_raw(
        self, topic: str, value: bytes | None, *, key: bytes | None = None, headers: Headers = ()
    ) -> StoredRecord:
        """Append raw bytes (for poison and foreign-format records)."""
        return self.broker.append(topic, value, key=key, headers=headers)

    # -- running ---------------------------------------------------------------------------

    async def run_until(self, condition: Callable[[], bool], within: float | None = None) -> None:
        """Run until ``condition()`` holds; the fake clock moves only when nothing else can.

        Raises ``TimeoutError`` after ``within`` real seconds, or the error that killed the
        worker.
        """
        deadline = time.monotonic() + (self._idle_timeout if within is None else within)
        while True:
            await self._settle()
            self._raise_if_failed()
            if condition():
                return
            # checked before the clock moves too: sleepers that wake forever never end a run
            if time.monotonic() > deadline:
                raise TimeoutError(f"the condition did not hold: {self._describe()}")
            if self.clock.advance_to_next():
                continue
            # something awaits real I/O (a handler, the poll); give it real time
            await asyncio.sleep(0.001)

    async def run_until_idle(self, within: float | None = None) -> None:
        """Run until every record is final and committed.

        The fake clock moves when only sleepers are left; ``within`` bounds the real seconds.
        Raises ``TimeoutError`` naming what is pending, or the error that killed the worker.
        """
        await self.run_until(self._idle, within)
        worker = self.app.worker
        await worker.committer.commit(list(worker.owned()))

    async def crash(self) -> None:
        """Kill the worker as ``kill -9`` would (no drain, no commit, leases left held), then
        start a fresh one in the same group; uncommitted records are delivered again."""
        # a killed process releases nothing: keep its leases by refusing store calls meanwhile
        self.store.set_unavailable(True)
        try:
            await self.app.abort()
        finally:
            self.store.set_unavailable(False)
        await self._start_app()

    async def restart(self) -> None:
        """Stop the worker gracefully (drain and commit), then start a fresh one."""
        await self.app.stop()
        await self._start_app()

    async def _settle(self) -> None:
        previous: tuple[int, ...] | None = None
        while True:
            for _ in range(5):
                await asyncio.sleep(0)
            snapshot = self._progress()
            if snapshot == previous:
                return
            previous = snapshot

    def _progress(self) -> tuple[int, ...]:
        worker = self.app.worker
        appended = sum(
            self.broker.end_offset(tp)
            for topic in self.broker.topics()
            for tp in self.broker.partitions_for(topic)
        )
        return (
            len(self._recorder.results),
            appended,
            worker.unfinished(),
            self.clock.sleepers,
            len(worker.owned()),
        )

    def _expected_partitions(self) -> set[TopicPartition]:
        return {tp for topic in self.app.topics() for tp in self.broker.partitions_for(topic)}

    def _idle(self) -> bool:
        worker = self.app.worker
        consumer = self._consumer
        expected = self._expected_partitions()
        if consumer is None or worker.owned() != expected:
            return False
        if worker.busy() or worker.unfinished():
            return False
        return all(consumer.position(tp) >= self.broker.end_offset(tp) for tp in expected)

    def _raise_if_failed(self) -> None:
        failure = self.app.worker.failure
        if failure is not None:
            raise failure

    def _describe(self) -> str:
        worker = self.app.worker
        return (
            f"owned={sorted(worker.owned())} unfinished={worker.unfinished()} "
            f"busy={worker.busy()} sleepers={self.clock.sleepers}"
        )

    # -- what happened ---------------------------------------------------------------------

    @property
    def results(self) -> list[RecordResult]:
        """Every outcome, in the order they were reached."""
        return list(self._recorder.results)

    @property
    def outcomes(self) -> Counter[Outcome]:
        """How many records reached each outcome."""
        return Counter(result.outcome for result in self._recorder.results)

    def dead_letters(self, topic: str | None = None) -> list[StoredRecord]:
        """The records on the dead-letter topic of ``topic`` (of every app topic if None)."""
        topics = [topic] if topic is not None else sorted(self.app.topics())
        return [
            record
            for source in topics
            for record in self.broker.records(self.app.dead_letter_topic(source))
        ]

    def published(self, topic: str) -> list[StoredRecord]:
        """Every record on ``topic``, in partition then offset order."""
        return self.broker.records(topic)

    def committed(self, topic: str, partition: int) -> int | None:
        """The app's group's committed offset of one partition."""
        return self.broker.committed(self.app.group_id, TopicPartition(topic, partition))

    def end_offset(self, topic: str, partition: int) -> int:
        return self.broker.end_offset(TopicPartition(topic, partition))
