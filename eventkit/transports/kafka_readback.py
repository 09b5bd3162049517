"""Ground truth from the broker: a topic read to its end, and a group's committed offsets.

A topic is read by fetching from the beginning until every partition's position reaches the
high-water mark of a fetch made by this read, never with ``end_offsets()`` (wrong on some
brokers, Tansu among them). Each call uses a fresh client, so what it returns is at least as
new as the call. The demo, the tests and the benchmarks check eventkit against this.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from eventkit.transports.memory import StoredRecord

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


@dataclass(frozen=True, slots=True)
class TopicContents:
    """Every record of a topic, and the end offset (next offset to write) of each partition."""

    topic: str
    records: Sequence[StoredRecord]
    ends: Mapping[int, int]


async def read_topic(bootstrap: str, topic: str, within: float = 20.0) -> TopicContents:
    """Every record of ``topic`` up to each partition's end; ``TimeoutError`` after ``within``."""
    consumer = _consumer(bootstrap)
    try:
        await consumer.start()  # inside: a start that fails or is cancelled is closed too
        deadline = time.monotonic() + within
        partitions = await _partitions(consumer, topic, deadline)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[StoredRecord] = []
        while True:
            batches = await consumer.getmany(timeout_ms=100)
            records.extend(_stored(record) for batch in batches.values() for record in batch)
            ends: dict[int, int] = {}
            for tp in partitions:
                end: int | None = consumer.highwater(tp)
                if end is not None and await consumer.position(tp) >= end:
                    ends[tp.partition] = end
            if len(ends) == len(partitions):
                records.sort(key=lambda r: (r.partition, r.offset))
                return TopicContents(topic, records, ends)
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end in {within} s")
    finally:
        await consumer.stop()


async def committed_offsets(
    bootstrap: str, group_id: str, topic: str, within: float = 20.0
) -> dict[int, int | None]:
    """The offsets ``group_id`` committed for each partition of ``topic`` (``None``: none)."""
    # a consumer that names the group but never subscribes only asks, it does not join
    consumer = _consumer(bootstrap, group_id=group_id)
    try:
        await consumer.start()
        partitions = await _partitions(consumer, topic, time.monotonic() + within)
        committed: dict[int, int | None] = {}
        for tp in partitions:
            offset = await consumer.committed(tp)
            committed[tp.partition] = offset if offset is not None and offset >= 0 else None
        return committed
    finally:
        await consumer.stop()


def _consumer(bootstrap: str, group_id: str | None = None) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
    )


async def _partitions(
    consumer: AIOKafkaConsumer, topic: str, deadline: float
) -> list[TopicPartition]:
    while True:
        numbers = consumer.partitions_for_topic(topic)
        if numbers:
            return [TopicPartition(topic, number) for number in sorted(numbers)]
        if time.monotonic() > deadline:
            raise LookupError(f"topic {topic!r} does not exist on the broker")
        # the metadata of a topic created a moment ago can lag: ask again
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.05)


def _stored(record: Any) -> StoredRecord:
    return StoredRecord(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp=record.timestamp,
        key=record.key,
        value=record.value,
        headers=tuple(record.headers),
    )
