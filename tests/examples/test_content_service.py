"""The example content service on the in-memory bus, with the real dispatcher."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
import pytest

from eventkit import Outcome
from examples.content_service.models import (
    CONTENT_EVENTS,
    CONTENT_INDEXING_REQUESTED,
    CONTENT_VALIDATED,
    CONTENT_VALIDATION_REQUESTED,
    ContentIndexingRequested,
    ContentValidated,
    ContentValidationRequested,
)
from examples.content_service.repository import Content, InMemoryContentRepository
from examples.content_service.worker import MAX_BODY_CHARS, app, repository, validation_problem

if TYPE_CHECKING:
    from collections.abc import Iterator

    from eventkit.testing import TestBus
    from eventkit.transports.memory import StoredRecord

GUIDE = Content("c-1", "u-1", "Guide", "How to write a handler.")
DRAFT = Content("c-2", "u-2", "Draft", "")


@pytest.fixture
def repo() -> Iterator[InMemoryContentRepository]:
    """The worker's repository holding GUIDE and DRAFT, emptied again afterwards."""
    repository.clear()
    repository.add(GUIDE, DRAFT)
    yield repository
    repository.clear()


def verdicts(bus: TestBus) -> list[StoredRecord]:
    return [
        record
        for record in bus.published(CONTENT_EVENTS)
        if dict(record.headers).get("event_type") == CONTENT_VALIDATED.encode()
    ]


def headers_of(record: StoredRecord) -> dict[str, str]:
    return {name: value.decode() for name, value in record.headers}


async def request_validation(bus: TestBus, content_id: str, user_id: str) -> str:
    envelope = await bus.publish(
        CONTENT_EVENTS,
        CONTENT_VALIDATION_REQUESTED,
        ContentValidationRequested(content_id=content_id, user_id=user_id),
        key=content_id,
        correlation_id=f"corr-{content_id}",
    )
    return envelope.event_id


@pytest.mark.usefixtures("repo")
async def test_valid_content_is_announced_as_validated_with_correlation_and_causation() -> None:
    """A request for good content publishes CONTENT_VALIDATED(valid) caused by the request."""
    async with app.testing() as bus:
        request_id = await request_validation(bus, "c-1", "u-1")
        await bus.run_until_idle()
        [verdict] = verdicts(bus)
        assert bus.outcomes[Outcome.HANDLED] == 1
    body = msgspec.json.decode(verdict.value or b"")
    assert ContentValidated.model_validate(body["data"]) == ContentValidated(
        content_id="c-1", valid=True, reason=None
    )
    assert body["correlation_id"] == "corr-c-1"
    assert body["metadata"]["causation_id"] == request_id
    assert body["source_service"] == "content-service"
    assert headers_of(verdict)["causation_id"] == request_id
    assert verdict.key == b"c-1"


@pytest.mark.usefixtures("repo")
async def test_invalid_content_is_announced_as_invalid_with_the_reason() -> None:
    """Content with an empty body gets CONTENT_VALIDATED(valid=False) naming why."""
    async with app.testing() as bus:
        await request_validation(bus, "c-2", "u-2")
        await bus.run_until_idle()
        [verdict] = verdicts(bus)
    data = msgspec.json.decode(verdict.value or b"")["data"]
    assert ContentValidated.model_validate(data) == ContentValidated(
        content_id="c-2", valid=False, reason="body is empty"
    )


@pytest.mark.usefixtures("repo")
async def test_a_request_for_missing_content_is_dead_lettered_without_retries() -> None:
    """Missing content raises NonRetryableError: one attempt, the DLQ, nothing published."""
    async with app.testing() as bus:
        await request_validation(bus, "c-404", "u-4")
        await bus.run_until_idle()
        [letter] = bus.dead_letters(CONTENT_EVENTS)
        [original] = [r for r in bus.published(CONTENT_EVENTS) if r.key == b"c-404"]
        assert bus.outcomes == {Outcome.DEAD_LETTERED: 1}
        assert verdicts(bus) == []
        assert bus.committed(CONTENT_EVENTS, original.partition) == original.offset + 1
    headers = headers_of(letter)
    assert letter.value == original.value
    assert headers["dlq_reason"] == "handler_error"
    assert headers["dlq_exception_class"] == "eventkit.errors.NonRetryableError"
    assert "c-404" in headers["dlq_exception_message"]
    assert headers["dlq_attempts"] == "1"
    assert headers["event_type"] == CONTENT_VALIDATION_REQUESTED


async def test_indexing_marks_the_content_indexed(repo: InMemoryContentRepository) -> None:
    """CONTENT_INDEXING_REQUESTED leaves the content marked indexed in the repository."""
    async with app.testing() as bus:
        await bus.publish(
            CONTENT_EVENTS, CONTENT_INDEXING_REQUESTED, ContentIndexingRequested(content_id="c-1")
        )
        await bus.run_until_idle()
        assert bus.outcomes == {Outcome.HANDLED: 1}
    assert await repo.get("c-1") == Content("c-1", "u-1", "Guide", "How to write a handler.", True)
    draft = await repo.get("c-2")
    assert draft is not None
    assert not draft.indexed


async def test_a_duplicate_delivery_of_one_envelope_is_handled_once(
    repo: InMemoryContentRepository,
) -> None:
    """The same envelope delivered twice runs the handler once; the second is a DUPLICATE."""
    async with app.testing() as bus:
        envelope = await bus.publish(
            CONTENT_EVENTS,
            CONTENT_INDEXING_REQUESTED,
            ContentIndexingRequested(content_id="c-1"),
            key="c-1",
        )
        await bus.publish(CONTENT_EVENTS, CONTENT_INDEXING_REQUESTED, envelope, key="c-1")
        await bus.run_until_idle()
        assert bus.outcomes == {Outcome.HANDLED: 1, Outcome.DUPLICATE: 1}
        [handled] = [r for r in bus.results if r.outcome is Outcome.HANDLED]
        [duplicate] = [r for r in bus.results if r.outcome is Outcome.DUPLICATE]
    assert handled.event_id == duplicate.event_id == envelope.event_id
    assert handled.offset < duplicate.offset
    content = await repo.get("c-1")
    assert content is not None
    assert content.indexed


async def test_two_indexing_requests_for_one_content_leave_it_indexed_once(
    repo: InMemoryContentRepository,
) -> None:
    """Different events for the same content both succeed; indexing is idempotent on its id."""
    async with app.testing() as bus:
        for _ in range(2):
            await bus.publish(
                CONTENT_EVENTS,
                CONTENT_INDEXING_REQUESTED,
                ContentIndexingRequested(content_id="c-1"),
                key="c-1",
            )
        await bus.run_until_idle()
        assert bus.outcomes == {Outcome.HANDLED: 2}
    assert await repo.mark_indexed("c-1") is False


@pytest.mark.usefixtures("repo")
async def test_indexing_missing_content_is_dead_lettered() -> None:
    """An indexing request for content that does not exist lands in the DLQ at once."""
    async with app.testing() as bus:
        await bus.publish(
            CONTENT_EVENTS, CONTENT_INDEXING_REQUESTED, ContentIndexingRequested(content_id="c-9")
        )
        await bus.run_until_idle()
        [letter] = bus.dead_letters(CONTENT_EVENTS)
    assert headers_of(letter)["dlq_attempts"] == "1"


@pytest.mark.usefixtures("repo")
async def test_events_of_other_types_on_the_topic_are_skipped() -> None:
    """Types this service has no handler for, its own verdicts included, are SKIPPED."""
    async with app.testing() as bus:
        await request_validation(bus, "c-1", "u-1")
        await bus.publish(CONTENT_EVENTS, "CONTENT_ARCHIVED", {"content_id": "c-1"})
        await bus.run_until_idle()
        assert bus.outcomes == {Outcome.HANDLED: 1, Outcome.SKIPPED: 2}
        skipped = sorted(str(r.event_type) for r in bus.results if r.outcome is Outcome.SKIPPED)
    assert skipped == ["CONTENT_ARCHIVED", CONTENT_VALIDATED]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (GUIDE, None),
        (Content("c", "u", "  ", "text"), "title is empty"),
        (Content("c", "u", "Title", " \n"), "body is empty"),
        (
            Content("c", "u", "Title", "x" * (MAX_BODY_CHARS + 1)),
            "body is longer than 10000 characters",
        ),
    ],
    ids=["valid", "no-title", "blank-body", "too-long"],
)
def test_validation_names_the_first_problem(content: Content, problem: str | None) -> None:
    """Title, then body emptiness, then body length decide validity."""
    assert validation_problem(content) == problem
