"""Transport URLs: ``memory://`` names a shared in-process broker."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from eventkit import ConfigurationError, EventApp, EventPublisher
from eventkit.idempotency import InMemoryIdempotencyStore
from eventkit.transports import connect, memory_broker


async def test_an_app_started_on_memory_url_handles_what_a_publisher_sends_there() -> None:
    """A worker and a publisher connected to the same memory:// name share one broker."""
    name = f"shared-{uuid.uuid4().hex}"
    app = EventApp("embedded")
    handled: list[int] = []
    done = asyncio.Event()

    @app.handler("N", topic="numbers")
    async def handle(event: dict[str, Any]) -> None:
        handled.append(event["n"])
        done.set()

    memory_broker(name).create_topic("numbers", 1)
    transport = connect(f"memory://{name}", group_id=app.group_id)
    await app.start(
        consumer=transport.consumer,
        publisher=transport.publisher,
        store=InMemoryIdempotencyStore(),
    )
    sender = connect(f"memory://{name}", group_id="another-service").publisher
    await sender.start()
    try:
        await EventPublisher(sender, source_service="another").publish("numbers", "N", {"n": 7})
        await asyncio.wait_for(done.wait(), 5.0)
        assert handled == [7]
    finally:
        await sender.stop()
        await app.stop()


@pytest.mark.parametrize("url", ["kafka://localhost:9092", "memory://name/path", "redis://x"])
def test_an_unsupported_transport_url_fails_naming_it(url: str) -> None:
    """Anything but memory://NAME is a configuration error that names the URL."""
    with pytest.raises(ConfigurationError, match="memory://"):
        connect(url, group_id="g")
