"""The content service on real events, in memory: ``python -m examples.demo`` (``make demo``).

It runs the example worker's app through ``app.testing()``: the real dispatcher, worker and
idempotency store over the in-memory broker, with a fake clock. The Kafka broker takes its place
when the Kafka transport exists. The report is built only from what the bus recorded.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING, Any

import msgspec

from eventkit import Outcome
from examples.content_service.models import (
    CONTENT_EVENTS,
    CONTENT_INDEXING_REQUESTED,
    CONTENT_VALIDATED,
    CONTENT_VALIDATION_REQUESTED,
    ContentIndexingRequested,
    ContentValidationRequested,
)
from examples.content_service.repository import Content
from examples.content_service.worker import app, repository

if TYPE_CHECKING:
    from eventkit.testing import TestBus
    from eventkit.transports.memory import StoredRecord

CONTENTS = (
    Content("c-100", "u-1", "Getting started", "How to write your first handler."),
    Content("c-500", "u-2", "Draft", "   "),
    Content("c-800", "u-3", "Release notes", "What changed in this release."),
)
UNDECODABLE = b"\x00\x9f not an event"


def seed_repository() -> None:
    """Put the demo's contents in the worker's repository, and nothing else."""
    repository.clear()
    repository.add(*CONTENTS)


async def publish_stream(bus: TestBus) -> None:
    """What other services send: requests, a redelivery, a stranger and garbage."""
    for content_id, user_id in (("c-100", "u-1"), ("c-500", "u-2"), ("c-800", "u-3")):
        request = ContentValidationRequested(content_id=content_id, user_id=user_id)
        await bus.publish(
            CONTENT_EVENTS,
            CONTENT_VALIDATION_REQUESTED,
            request,
            key=content_id,
            correlation_id=f"corr-{content_id}",
        )
    missing = ContentValidationRequested(content_id="c-404", user_id="u-4")
    await bus.publish(
        CONTENT_EVENTS,
        CONTENT_VALIDATION_REQUESTED,
        missing,
        key="c-404",
        correlation_id="corr-c-404",
    )
    indexing = await bus.publish(
        CONTENT_EVENTS,
        CONTENT_INDEXING_REQUESTED,
        ContentIndexingRequested(content_id="c-100"),
        key="c-100",
    )
    # the producer retried: the same envelope (same event_id) arrives a second time
    await bus.publish(CONTENT_EVENTS, CONTENT_INDEXING_REQUESTED, indexing, key="c-100")
    await bus.publish(
        CONTENT_EVENTS,
        CONTENT_INDEXING_REQUESTED,
        ContentIndexingRequested(content_id="c-800"),
        key="c-800",
    )
    await bus.publish(CONTENT_EVENTS, "CONTENT_ARCHIVED", {"content_id": "c-500"}, key="c-500")
    await bus.publish_raw(CONTENT_EVENTS, UNDECODABLE)


async def run() -> TestBus:
    """Publish the stream to the example app in memory and run until all is committed."""
    seed_repository()
    async with app.testing() as bus:
        await publish_stream(bus)
        await bus.run_until_idle()
    return bus


def _short(text: str | None) -> str:
    return (text or "-")[:8]


def _body(record: StoredRecord) -> dict[str, Any]:
    try:
        body = msgspec.json.decode(record.value or b"")
    except msgspec.DecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def _content_id(record: StoredRecord) -> str:
    data = _body(record).get("data")
    return str(data.get("content_id", "?")) if isinstance(data, dict) else "?"


def render(bus: TestBus) -> str:
    """A compact report of what happened on ``bus``, from its results, topics and offsets."""
    records = {(r.partition, r.offset): r for r in bus.published(CONTENT_EVENTS)}
    results = sorted(
        (r for r in bus.results if r.topic == CONTENT_EVENTS), key=lambda r: (r.partition, r.offset)
    )
    outcomes = bus.outcomes
    order = (Outcome.HANDLED, Outcome.DUPLICATE, Outcome.SKIPPED, Outcome.DEAD_LETTERED)
    final = {(r.partition, r.offset) for r in results if r.outcome.is_final}
    lines = [
        "eventkit demo: content-service on the in-memory broker, with the real dispatcher,",
        "worker and idempotency store (a fake clock; the Kafka broker comes with the Kafka",
        "transport).",
        "",
        f"{len(records)} records on {CONTENT_EVENTS}, {len(final)} final: "
        + ", ".join(f"{o.value} {outcomes[o]}" for o in order),
        "Handled:",
    ]
    for result in results:
        record = records[result.partition, result.offset]
        where = f"  [{result.partition}]@{result.offset:<2}"
        if result.outcome is Outcome.HANDLED:
            lines.append(
                f"{where} {result.event_type:<29} {_content_id(record):<6}"
                f" event {_short(result.event_id)}"
            )
    duplicates = [r for r in results if r.outcome is Outcome.DUPLICATE]
    lines.append("Duplicate deliveries (the handler did not run again):")
    lines.extend(
        f"  [{r.partition}]@{r.offset:<2} {r.event_type:<29} "
        f"{_content_id(records[r.partition, r.offset]):<6} event {_short(r.event_id)}"
        for r in duplicates
    )
    skipped = Counter(r.event_type for r in results if r.outcome is Outcome.SKIPPED)
    lines.append(
        "Skipped, no handler in this service: "
        + ", ".join(f"{event_type} x{count}" for event_type, count in sorted(skipped.items()))
    )
    lines.append(f"Dead-lettered to {app.dead_letter_topic(CONTENT_EVENTS)}:")
    for letter in bus.dead_letters(CONTENT_EVENTS):
        headers = {name: value.decode("utf-8", "replace") for name, value in letter.headers}
        lines.append(
            f"  [{headers['dlq_original_partition']}]@{headers['dlq_original_offset']:<2}"
            f" {headers.get('event_type', '(no type header)'):<29}"
            f" reason={headers['dlq_reason']} attempts={headers['dlq_attempts']}"
        )
        exception = headers["dlq_exception_class"].rpartition(".")[2]
        lines.append(f"      {exception}: {headers['dlq_exception_message'][:70]}")
    lines.append(f"Published by the worker to {CONTENT_EVENTS}:")
    for record in records.values():
        headers = {name: value.decode() for name, value in record.headers}
        if headers.get("event_type") != CONTENT_VALIDATED:
            continue
        body = _body(record)
        data = body.get("data", {})
        verdict = "valid" if data.get("valid") else f"invalid ({data.get('reason')})"
        lines.append(
            f"  {CONTENT_VALIDATED} {data.get('content_id'):<6} {verdict:<24}"
            f" causation {_short(headers.get('causation_id'))}"
            f" correlation {body.get('correlation_id')}"
        )
    indexed = [content.content_id for content in repository.contents() if content.indexed]
    lines.append(f"Repository: indexed {', '.join(indexed) or 'nothing'}")
    lines.append("Committed offset / end offset per partition:")
    lines.append(
        "  "
        + "   ".join(
            f"{CONTENT_EVENTS}[{p}] {bus.committed(CONTENT_EVENTS, p)}/"
            f"{bus.end_offset(CONTENT_EVENTS, p)}"
            for p in range(len(bus.broker.partitions_for(CONTENT_EVENTS)))
        )
    )
    return "\n".join(lines)


async def main() -> int:
    """Run the demo and print its report; the exit status is 0."""
    bus = await run()
    print(render(bus))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
