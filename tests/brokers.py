"""The real Kafka-protocol broker the integration and contract tests run against.

A session starts one Tansu broker (``eventkit.embedded_broker``) on a free port, unless
``EVENTKIT_TEST_KAFKA`` names a running broker (``host:port``). Topics are created explicitly
and read back with fetch high-water marks, never with ``end_offsets()`` (wrong on Tansu).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from eventkit.transports import kafka_readback
from eventkit.transports.kafka_settings import KafkaSettings

if TYPE_CHECKING:
    from eventkit.transports.memory import StoredRecord

TEST_KAFKA_ENV = "EVENTKIT_TEST_KAFKA"


def external_kafka() -> str | None:
    """The ``host:port`` of a broker to use instead of starting one, if set."""
    return os.environ.get(TEST_KAFKA_ENV) or None


def client_settings(bootstrap: str, **changes: Any) -> KafkaSettings:
    """Client settings for tests: short group timeouts, no idempotent producer (Tansu)."""
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "session_timeout_ms": 3000,
        "heartbeat_interval_ms": 300,
        "rebalance_timeout_ms": 10_000,
        "fetch_max_wait_ms": 50,
        "linger_ms": 0,
        # the Tansu broker refuses aiokafka's InitProducerId
        "enable_idempotence": False,
    }
    options.update(changes)
    return KafkaSettings(**options)


def kafka_url(bootstrap: str, **options: object) -> str:
    """A ``kafka://`` URL with the test settings, for processes started by the tests."""
    defaults: dict[str, object] = {
        "session_timeout_ms": 3000,
        "heartbeat_interval_ms": 300,
        "rebalance_timeout_ms": 10_000,
        "fetch_max_wait_ms": 50,
        "enable_idempotence": "false",
    }
    defaults.update(options)
    query = "&".join(f"{name}={value}" for name, value in defaults.items())
    return f"kafka://{bootstrap}?{query}"


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    """Create ``name`` with ``partitions`` partitions (an existing one is an error)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response: Any = await admin.create_topics([NewTopic(name, partitions, 1)])
        for topic, code, message in response.topic_errors:
            if code != 0:
                raise RuntimeError(f"creating topic {topic}: {message or code}")
    finally:
        await admin.close()


async def read_topic(bootstrap: str, topic: str) -> list[StoredRecord]:
    """Every record of ``topic``, read up to each partition's fetch high-water mark."""
    return list((await kafka_readback.read_topic(bootstrap, topic)).records)


async def topic_ends(bootstrap: str, topic: str) -> dict[int, int]:
    """Each partition's end: its fetch high-water mark once read to the end."""
    return dict((await kafka_readback.read_topic(bootstrap, topic)).ends)


async def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    """The offsets ``group`` has committed for each partition of ``topic`` (without joining)."""
    return await kafka_readback.committed_offsets(bootstrap, group, topic)
