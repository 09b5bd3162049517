"""What the worker tests share: the service's names, fast timings and a condition wait."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from eventkit.worker import WorkerConfig

if TYPE_CHECKING:
    from collections.abc import Callable

TOPIC = "orders"
EVENT = "ORDER_PLACED"
SERVICE = "fulfilment"
GROUP = f"{SERVICE}-consumer"


def fast(**overrides: Any) -> WorkerConfig:
    """Worker timings short enough for unit tests."""
    return WorkerConfig(poll_timeout=0.02, commit_interval=0.05, **overrides)


async def eventually(predicate: Callable[[], bool], message: str = "", within: float = 5.0) -> None:
    """Wait until ``predicate()`` holds; ``AssertionError`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {within} s: {message or predicate}")
        await asyncio.sleep(0.005)
