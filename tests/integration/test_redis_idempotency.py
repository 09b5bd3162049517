"""The idempotency step on a real Redis and a real broker: the seed's idempotency lessons.

Each test runs an ``EventApp`` in this process on the session's Tansu broker with a
``RedisIdempotencyStore`` on a private ``redis-server``, and asserts handler runs per event id
(the ground truth), what Redis holds and what the group committed. Faults are real: the
Redis process is paused with SIGSTOP, or killed and started again empty.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest

from eventkit import EventApp, EventContext, EventEnvelope, EventPublisher, RetryPolicy
from eventkit.idempotency import RedisIdempotencyStore, RedisSettings
from eventkit.keys import event_key, namespace_for
from eventkit.ports import ClaimRequest, ClaimStatus
from eventkit.transports.kafka_publisher import KafkaPublisher
from eventkit.worker import WorkerConfig
from tests.brokers import client_settings, committed_offsets, create_topic, kafka_url, topic_ends

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    import redis.asyncio

    from eventkit.embedded_redis import EmbeddedRedis

SERVICE = "ledger"
EVENT = "PAYMENT_CAPTURED"
#: short enough that a test waits out a lease, long enough for a handler on a busy machine
LEASE = 2.0


def no_retry_client(server: EmbeddedRedis) -> redis.asyncio.Redis:
    """The worker's own client settings, failing fast: it never re-sends a script."""
    settings = RedisSettings.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    return settings.client()


class Scenario:
    """One topic and group on the broker, an upstream producer, and the runs of the handler."""

    def __init__(self, bootstrap: str, server: EmbeddedRedis) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.bootstrap = bootstrap
        self.server = server
        self.topic = f"payments-{suffix}"
        self.group = f"{SERVICE}-{suffix}"
        self.runs: Counter[str] = Counter()
        self.client = no_retry_client(server)
        self.store = RedisIdempotencyStore(self.client)
        self._transport = KafkaPublisher(client_settings(bootstrap))
        self.producer = EventPublisher(self._transport, source_service="checkout")
        self._apps: list[EventApp] = []

    async def open(self) -> None:
        await create_topic(self.bootstrap, self.topic, 1)
        await create_topic(self.bootstrap, f"{self.topic}.dlq", 1)
        await self._transport.start()

    async def close(self) -> None:
        for app in self._apps:
            if app.running:
                await app.abort()
        await self._transport.stop()
        await self.client.aclose()

    def app(
        self, hook: Callable[[dict[str, Any], EventContext], Awaitable[None]] | None = None
    ) -> EventApp:
        """The service: counts each run by event id, then runs the test's hook."""
        app = EventApp(
            SERVICE,
            group_id=self.group,
            lease_seconds=LEASE,
            retry=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05),
            worker=WorkerConfig(
                poll_timeout=0.05, commit_interval=0.1, defer_base_delay=0.1, defer_max_delay=0.5
            ),
        )

        @app.handler(EVENT, topic=self.topic)
        async def capture(event: dict[str, Any], ctx: EventContext) -> None:
            self.runs[ctx.event_id] += 1
            if hook is not None:
                await hook(event, ctx)

        self._apps.append(app)
        return app

    async def start(self, app: EventApp) -> None:
        await app.start(kafka_url(self.bootstrap), store=self.store)

    async def publish(self, envelope: EventEnvelope[Any], *, key: str = "k") -> None:
        await self.producer.publish(self.topic, EVENT, envelope, key=key)

    async def committed_to_end(self) -> bool:
        ends = await topic_ends(self.bootstrap, self.topic)
        return await committed_offsets(self.bootstrap, self.group, self.topic) == ends

    def idempotency_key(self, envelope: EventEnvelope[Any]) -> str:
        """The key the app's idempotency step uses for ``envelope``."""
        return event_key(namespace_for(SERVICE, self.group), EVENT, envelope.event_id)


@pytest.fixture
async def scenario(kafka_bootstrap: str, redis_server: EmbeddedRedis) -> AsyncIterator[Scenario]:
    scenario = Scenario(kafka_bootstrap, redis_server)
    await scenario.open()
    try:
        yield scenario
    finally:
        await scenario.close()


def envelope(number: int) -> EventEnvelope[dict[str, Any]]:
    return EventEnvelope(event_type=EVENT, data={"n": number}, source_service="checkout")


async def until(predicate: Callable[[], Awaitable[bool] | bool], what: str, within: float) -> None:
    """Wait until ``predicate`` holds; fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if isinstance(result, bool) and result:
            return
        if not isinstance(result, bool) and await result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.05)


async def test_one_event_delivered_twice_in_one_chunk_runs_its_handler_once(
    scenario: Scenario,
) -> None:
    """The same envelope published twice back to back lands in one claim chunk: the handler
    runs once, the second record is a duplicate, both are committed."""
    event = envelope(1)
    await scenario.publish(event)
    await scenario.publish(event)
    app = scenario.app()
    await scenario.start(app)
    await until(scenario.committed_to_end, "both records committed", 30)
    assert scenario.runs == Counter({event.event_id: 1})
    assert app.dispatcher.guard is not None
    assert app.dispatcher.guard.counts.duplicate == 1
    assert await app.stop()


async def test_a_failed_attempt_is_retried_once_under_its_claim_never_run_unprotected(
    scenario: Scenario,
) -> None:
    """A handler that fails its first attempt runs exactly twice (not three times, as when a
    wrapper deleted the key and called it again), Redis counts two starts, and the key ends
    done: a redelivery is a duplicate."""
    failures = Counter[str]()

    async def fail_once(event: dict[str, Any], ctx: EventContext) -> None:
        if failures[ctx.event_id] == 0:
            failures[ctx.event_id] += 1
            raise RuntimeError("transient")

    event = envelope(1)
    await scenario.publish(event)
    app = scenario.app(fail_once)
    await scenario.start(app)
    await until(scenario.committed_to_end, "the record committed", 30)
    assert scenario.runs[event.event_id] == 2
    (answer,) = await scenario.store.claim([ClaimRequest(scenario.idempotency_key(event))], LEASE)
    assert answer.status is ClaimStatus.DUPLICATE
    assert answer.attempts == 2
    assert await app.stop()


async def test_an_event_leased_by_a_crashed_worker_is_busy_not_duplicate_then_handled(
    scenario: Scenario,
) -> None:
    """A key left leased by a worker that died mid-handler is BUSY, never DUPLICATE: the record
    stays uncommitted until the lease expires, then this worker runs it once."""
    event = envelope(1)
    app = scenario.app()
    await scenario.start(app)
    await until(lambda: bool(app.worker.owned()), "the partition assigned", 30)
    (crashed,) = await scenario.store.claim([ClaimRequest(scenario.idempotency_key(event))], LEASE)
    assert crashed.status is ClaimStatus.CLAIMED
    leased_at = time.monotonic()
    await scenario.publish(event)
    await until(scenario.committed_to_end, "the record committed", 30)
    handled_after = time.monotonic() - leased_at
    assert scenario.runs == Counter({event.event_id: 1})
    assert handled_after >= LEASE * 0.9, f"committed {handled_after:.2f} s after the lease"
    assert app.dispatcher.guard is not None
    assert app.dispatcher.guard.counts.busy >= 1
    assert await app.stop()


async def test_the_dispatcher_marks_done_without_the_handler_confirming_anything(
    scenario: Scenario,
) -> None:
    """A handler that just returns leaves its key DONE as handled, so a later delivery of the
    same event (here by a second app of the group, after the first stopped) does not run it."""
    event = envelope(1)
    await scenario.publish(event)
    first = scenario.app()
    await scenario.start(first)
    await until(scenario.committed_to_end, "the first delivery committed", 30)
    assert await first.stop()
    await scenario.publish(event, key="re-keyed")  # a producer that re-keyed the same event
    second = scenario.app()
    await scenario.start(second)
    await until(scenario.committed_to_end, "the second delivery committed", 30)
    assert scenario.runs == Counter({event.event_id: 1})
    assert await second.stop()


async def test_redis_paused_mid_stream_defers_records_and_loses_or_repeats_nothing(
    scenario: Scenario,
) -> None:
    """Redis is stopped with SIGSTOP while events flow: no handler runs without a claim, the
    partition waits, and after SIGCONT every event runs exactly once and is committed."""
    app = scenario.app()
    await scenario.start(app)
    sent = [envelope(number) for number in range(60)]
    for event in sent[:20]:
        await scenario.publish(event)
    await until(lambda: len(scenario.runs) == 20, "the first 20 handled", 30)
    scenario.server.pause()
    try:
        for event in sent[20:]:
            await scenario.publish(event)
        await asyncio.sleep(2.0)  # the worker meets the stalled Redis and defers
        stalled = sum(scenario.runs.values())
        assert not await scenario.committed_to_end(), "records waited while Redis was stopped"
    finally:
        scenario.server.resume()
    assert stalled == 20, f"{stalled - 20} handlers ran while Redis was stopped"
    await until(scenario.committed_to_end, "every record committed after SIGCONT", 60)
    assert scenario.runs == Counter({event.event_id: 1 for event in sent})
    assert await app.stop()


async def test_redis_restarted_empty_lets_processing_go_on_with_nothing_lost(
    scenario: Scenario,
) -> None:
    """Redis killed and started again with no data mid-stream: the worker goes on and every
    event runs at least once. Events whose DONE was lost with the data may run again when
    delivered again; that is the documented window of an empty restart."""
    app = scenario.app()
    await scenario.start(app)
    sent = [envelope(number) for number in range(40)]
    for event in sent[:20]:
        await scenario.publish(event)
    await until(lambda: len(scenario.runs) == 20, "the first 20 handled", 30)
    scenario.server.kill()
    for event in sent[20:]:
        await scenario.publish(event)
    await asyncio.sleep(1.0)  # the worker meets the dead Redis and defers
    scenario.server.restart()
    await until(scenario.committed_to_end, "every record committed after the restart", 60)
    assert set(scenario.runs) == {event.event_id for event in sent}
    assert all(runs == 1 for runs in scenario.runs.values()), "no record was delivered twice"
    assert await app.stop()


async def claimed_on_prepaid_starts(client: redis.asyncio.Redis) -> int:
    """Keys under a lease whose prepaid first start is not confirmed yet (Redis is the ground
    truth): claimed ahead and not started, or running the first attempt with no store call."""
    count = 0
    async for name in client.scan_iter(match="eventkit:*"):
        token, prepaid_by = await client.hmget(name, ["tok", "pp"])
        if token is not None and token == prepaid_by:
            count += 1
    return count


async def test_records_claimed_ahead_and_revoked_before_they_start_spend_no_attempt(
    scenario: Scenario,
) -> None:
    """A second worker joins while the first holds claims on records it has not started: the
    revoke releases them, whoever runs them next claims them afresh, and every event ends
    with one run and one counted attempt."""

    async def slow(event: dict[str, Any], ctx: EventContext) -> None:
        await asyncio.sleep(0.2)

    sent = [envelope(number) for number in range(30)]
    for event in sent:
        await scenario.publish(event)
    first = scenario.app(slow)
    await scenario.start(first)
    await until(lambda: len(scenario.runs) >= 2, "the first worker under way", 30)
    # one partition, one record running: the others are claimed ahead and not started
    ahead = await claimed_on_prepaid_starts(scenario.client) - 1
    assert ahead >= 1, "the first worker held claims on records it had not started"
    second = scenario.app(slow)
    await scenario.start(second)
    await until(scenario.committed_to_end, "every record committed", 90)
    assert scenario.runs == Counter({event.event_id: 1 for event in sent})
    answers = await scenario.store.claim(
        [ClaimRequest(scenario.idempotency_key(event)) for event in sent], LEASE
    )
    assert {answer.status for answer in answers} == {ClaimStatus.DUPLICATE}
    assert [answer.attempts for answer in answers] == [1] * len(sent)
    assert first.worker.rebalances >= 1
    assert await first.stop()
    assert await second.stop()
