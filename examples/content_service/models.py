"""The payloads of the content service's events, and the names of their types."""

from __future__ import annotations

from pydantic import BaseModel

CONTENT_EVENTS = "content-events"

CONTENT_VALIDATION_REQUESTED = "CONTENT_VALIDATION_REQUESTED"
CONTENT_INDEXING_REQUESTED = "CONTENT_INDEXING_REQUESTED"
CONTENT_VALIDATED = "CONTENT_VALIDATED"


class ContentValidationRequested(BaseModel):
    """Someone asks for a piece of content to be checked before it is published."""

    content_id: str
    user_id: str


class ContentIndexingRequested(BaseModel):
    """A piece of content should become searchable."""

    content_id: str


class ContentValidated(BaseModel):
    """The verdict on a validation request; ``reason`` says why content is invalid."""

    content_id: str
    valid: bool
    reason: str | None = None
