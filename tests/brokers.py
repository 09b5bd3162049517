"""The real Kafka-protocol broker the integration and contract tests run against.

A session starts one Tansu broker (``eventkit.embedded_broker``) on a free port, unless
``EVENTKIT_TEST_KAFKA`` names a running broker (``host:port``). Topics are created explicitly
and read back with fetch high-water marks, never with ``end_offsets()`` (wrong on Tansu).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from eventkit.transports.kafka_settings import KafkaSettings

if TYPE_CHECKING:
    from aiokafka.structs import ConsumerRecord

TEST_KAFKA_ENV = "EVENTKIT_TEST_KAFKA"
_TOPIC_ALREADY_EXISTS = 36


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


async def read_topic(
    bootstrap: str,
    topic: str,
    timeout: float = 20.0,  # noqa: ASYNC109 - a deadline for reading, not for one await
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic``, read up to each partition's fetch high-water mark."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    try:
        partitions = await _partitions(consumer, topic, timeout)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + timeout
        while True:
            batches = await consumer.getmany(timeout_ms=100)
            for batch in batches.values():
                records.extend(batch)
            if all([await _read_to_end(consumer, tp) for tp in partitions]):
                return sorted(records, key=lambda r: (r.partition, r.offset))
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end in {timeout} s")
    finally:
        await consumer.stop()


async def _partitions(
    consumer: AIOKafkaConsumer,
    topic: str,
    timeout: float,  # noqa: ASYNC109
) -> list[TopicPartition]:
    deadline = time.monotonic() + timeout
    while True:
        numbers = consumer.partitions_for_topic(topic)
        if numbers:
            return [TopicPartition(topic, n) for n in sorted(numbers)]
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {topic} has no partitions")
        await consumer._client.force_metadata_update()  # no public metadata refresh
        await asyncio.sleep(0.05)  # metadata of a new topic can lag its creation


async def _read_to_end(consumer: AIOKafkaConsumer, tp: TopicPartition) -> bool:
    highwater = consumer.highwater(tp)
    return highwater is not None and await consumer.position(tp) >= highwater
