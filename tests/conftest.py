"""Session-wide fixtures: the real broker, started once and only when a test asks for it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from eventkit.embedded_broker import EmbeddedBroker
from eventkit.embedded_redis import EmbeddedRedis
from tests.brokers import external_kafka

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``host:port`` of a running Kafka-protocol broker (Tansu unless EVENTKIT_TEST_KAFKA)."""
    external = external_kafka()
    if external is not None:
        yield external
        return
    # a missing binary raises with how to install it: a failure, never a skip
    with EmbeddedBroker() as broker:
        yield broker.bootstrap


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A ``redis-server`` of this test's own, which it may stop, pause, kill or restart."""
    with EmbeddedRedis(scratch=tmp_path / "redis") as server:
        yield server
