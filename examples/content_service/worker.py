"""The content service's event handlers: validate content and index it.

Run it with ``eventkit worker examples.content_service.worker:app`` (``make demo`` runs it on an
embedded broker); test it with ``async with app.testing()``.
The repository is a module-level instance for now; dependency injection comes later.
"""

from __future__ import annotations

from eventkit import EventApp, EventContext, NonRetryableError, Router
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

MAX_BODY_CHARS = 10_000

repository = InMemoryContentRepository()
router = Router(topic=CONTENT_EVENTS)


def validation_problem(content: Content) -> str | None:
    """Why the content may not be published, or ``None`` when it may."""
    if not content.title.strip():
        return "title is empty"
    if not content.body.strip():
        return "body is empty"
    if len(content.body) > MAX_BODY_CHARS:
        return f"body is longer than {MAX_BODY_CHARS} characters"
    return None


@router.handler(CONTENT_VALIDATION_REQUESTED)
async def validate_content(event: ContentValidationRequested, ctx: EventContext) -> None:
    """Check the content and publish the verdict, caused by this request."""
    content = await repository.get(event.content_id)
    if content is None:
        # retrying cannot make it exist: straight to the dead-letter topic
        raise NonRetryableError(f"content {event.content_id!r} does not exist")
    reason = validation_problem(content)
    verdict = ContentValidated(content_id=content.content_id, valid=reason is None, reason=reason)
    await ctx.publish(CONTENT_EVENTS, CONTENT_VALIDATED, verdict, key=content.content_id)


@router.handler(CONTENT_INDEXING_REQUESTED)
async def index_content(event: ContentIndexingRequested) -> None:
    """Mark the content indexed; indexing it again changes nothing."""
    content = await repository.get(event.content_id)
    if content is None:
        raise NonRetryableError(f"content {event.content_id!r} does not exist")
    await repository.mark_indexed(content.content_id)


app = EventApp(service="content-service")
app.include_router(router)
