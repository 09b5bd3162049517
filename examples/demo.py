"""The content service on a real broker: ``python -m examples.demo`` (``make demo``).

It starts an embedded Tansu broker, runs the example worker's app on it with
``app.start("kafka://...")`` (the Kafka transport, the real dispatcher and worker, an in-memory
idempotency store), publishes a stream of events through a Kafka producer, waits until the
worker has committed every partition up to its end, stops the app (drain and commit) and
the broker, and prints a report built from what the dispatcher observed and what the broker
holds. Ctrl-C or SIGTERM stops the app and the broker too; the exit status is then 130.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from typing import TYPE_CHECKING

from eventkit import EventPublisher
from eventkit.embedded_broker import EmbeddedBroker
from eventkit.idempotency import InMemoryIdempotencyStore
from eventkit.testing import OutcomeLog
from eventkit.transports.kafka_publisher import KafkaPublisher
from eventkit.transports.kafka_readback import committed_offsets, read_topic
from eventkit.transports.kafka_settings import KafkaSettings
from examples.content_service.models import (
    CONTENT_EVENTS,
    CONTENT_INDEXING_REQUESTED,
    CONTENT_VALIDATION_REQUESTED,
    ContentIndexingRequested,
    ContentValidationRequested,
)
from examples.content_service.repository import Content
from examples.content_service.worker import app, repository
from examples.demo_report import DemoRun, header, render

if TYPE_CHECKING:
    from types import FrameType

    from eventkit.ports import Publisher

CONTENTS = (
    Content("c-100", "u-1", "Getting started", "How to write your first handler."),
    Content("c-500", "u-2", "Draft", "   "),
    Content("c-800", "u-3", "Release notes", "What changed in this release."),
)
UNDECODABLE = b"\x00\x9f not an event"
WAIT_SECONDS = 60.0
INTERRUPTED = 130


def kafka_url(bootstrap: str) -> str:
    """The worker's transport URL: the app creates its topics; settings suited to Tansu."""
    options = {
        "create_topics": "true",  # the source topic and its dead-letter topic, 3 partitions
        "topic_partitions": 3,
        "enable_idempotence": "false",  # Tansu refuses aiokafka's InitProducerId
        "session_timeout_ms": 2000,  # a short session: the group forms in about a second
        "heartbeat_interval_ms": 200,
        "fetch_max_wait_ms": 50,
        "linger_ms": 0,
    }
    return f"kafka://{bootstrap}?" + "&".join(f"{k}={v}" for k, v in options.items())


async def publish_stream(events: EventPublisher, raw: Publisher) -> None:
    """What other services send: requests, a redelivery, a stranger and garbage."""
    for content_id, user_id in (("c-100", "u-1"), ("c-500", "u-2"), ("c-800", "u-3")):
        request = ContentValidationRequested(content_id=content_id, user_id=user_id)
        await events.publish(
            CONTENT_EVENTS,
            CONTENT_VALIDATION_REQUESTED,
            request,
            key=content_id,
            correlation_id=f"corr-{content_id}",
        )
    missing = ContentValidationRequested(content_id="c-404", user_id="u-4")
    await events.publish(
        CONTENT_EVENTS,
        CONTENT_VALIDATION_REQUESTED,
        missing,
        key="c-404",
        correlation_id="corr-c-404",
    )
    indexing = await events.publish(
        CONTENT_EVENTS,
        CONTENT_INDEXING_REQUESTED,
        ContentIndexingRequested(content_id="c-100"),
        key="c-100",
    )
    # the producer retried: the same envelope (same event_id) arrives a second time
    await events.publish(CONTENT_EVENTS, CONTENT_INDEXING_REQUESTED, indexing, key="c-100")
    await events.publish(
        CONTENT_EVENTS,
        CONTENT_INDEXING_REQUESTED,
        ContentIndexingRequested(content_id="c-800"),
        key="c-800",
    )
    await events.publish(CONTENT_EVENTS, "CONTENT_ARCHIVED", {"content_id": "c-500"}, key="c-500")
    await raw.send(CONTENT_EVENTS, UNDECODABLE)


async def wait_until_committed(bootstrap: str, within: float) -> None:
    """Return once the worker has committed every partition of the source topic to its end.

    The worker's commits are read before the topic, so a record published in between (by a
    handler, say) is in the ends read and keeps the check false. ``TimeoutError`` after
    ``within`` seconds; the worker's own failure is raised as soon as it is known.
    """
    deadline = time.monotonic() + within
    while True:
        worker = app.worker
        if worker.failure is not None:
            raise worker.failure
        committed = {
            tp.partition: offset
            for tp, offset in worker.committer.committed.items()
            if tp.topic == CONTENT_EVENTS
        }
        ends = (await read_topic(bootstrap, CONTENT_EVENTS)).ends
        if all(committed.get(partition, 0) == end for partition, end in ends.items()):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the worker did not commit {CONTENT_EVENTS} to its end in {within} s: "
                f"committed {committed}, ends {ends}"
            )
        await asyncio.sleep(0.1)  # polling the worker and the broker, bounded by the deadline


async def run(bootstrap: str) -> DemoRun:
    """Run the example app on the broker at ``bootstrap`` until all is committed, then stop."""
    repository.clear()
    repository.add(*CONTENTS)
    url = kafka_url(bootstrap)
    log = OutcomeLog()
    producer = KafkaPublisher(KafkaSettings.from_url(url))
    await app.start(url, store=InMemoryIdempotencyStore(), observers=[log])
    try:
        await producer.start()
        await publish_stream(EventPublisher(producer, source_service="content-api"), producer)
        await wait_until_committed(bootstrap, WAIT_SECONDS)
    finally:
        await producer.stop()
        try:
            clean = await app.stop()
        except BaseException:
            await app.abort()  # stop itself was interrupted: end the app without draining
            raise
    if not clean:
        raise RuntimeError("the worker stopped before every record it started had finished")
    dead_letter_topic = app.dead_letter_topic(CONTENT_EVENTS)
    events = await read_topic(bootstrap, CONTENT_EVENTS)
    return DemoRun(
        results=log.results,
        events=events.records,
        dead_letter_topic=dead_letter_topic,
        dead_letters=(await read_topic(bootstrap, dead_letter_topic)).records,
        committed=await committed_offsets(bootstrap, app.group_id, CONTENT_EVENTS),
        ends=events.ends,
        indexed=[content.content_id for content in repository.contents() if content.indexed],
    )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM takes Ctrl-C's path: asyncio cancels the run, and every finally runs
    signal.raise_signal(signal.SIGINT)


def main() -> int:
    """Run the demo and print its report; 0 when done, 130 when interrupted."""
    started = time.monotonic()
    # Ctrl-C even where SIGINT came in ignored (a background job of a script)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    broker = EmbeddedBroker()
    try:
        broker.start()
        print(header(broker.bootstrap), flush=True)
        outcome = asyncio.run(run(broker.bootstrap))
    except KeyboardInterrupt:
        print("interrupted: the app and the broker were stopped", file=sys.stderr)
        return INTERRUPTED
    finally:
        broker.stop()  # a no-op if start() failed, and it stops a half-started broker
    print(render(outcome, seconds=time.monotonic() - started))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
