"""Where the content service keeps content: a protocol and an in-memory implementation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Content:
    """One piece of content as the service stores it."""

    content_id: str
    owner_id: str
    title: str
    body: str
    indexed: bool = False


class ContentRepository(Protocol):
    """What the handlers need from storage."""

    async def get(self, content_id: str) -> Content | None:
        """The content with this id, or ``None`` if there is none."""
        ...

    async def mark_indexed(self, content_id: str) -> bool:
        """Mark the content indexed; ``True`` if this call changed it, ``False`` if it was.

        Raises ``KeyError`` when there is no content with this id.
        """
        ...


class InMemoryContentRepository:
    """A ``ContentRepository`` in a dict, for the demo and tests."""

    def __init__(self) -> None:
        self._contents: dict[str, Content] = {}

    def add(self, *contents: Content) -> None:
        """Store contents, replacing those with the same id."""
        for content in contents:
            self._contents[content.content_id] = content

    def clear(self) -> None:
        """Forget every content."""
        self._contents.clear()

    def contents(self) -> list[Content]:
        """Every stored content, in the order first added."""
        return list(self._contents.values())

    async def get(self, content_id: str) -> Content | None:
        return self._contents.get(content_id)

    async def mark_indexed(self, content_id: str) -> bool:
        content = self._contents[content_id]
        if content.indexed:
            return False
        self._contents[content_id] = dataclasses.replace(content, indexed=True)
        return True
