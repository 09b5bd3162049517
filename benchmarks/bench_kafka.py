"""End-to-end consume rate over Kafka: eventkit's worker against raw aiokafka loops.

Pre-produces ``--records`` eventkit JSON envelopes (about 480 bytes, with the ``event_type``
header, as ``EventPublisher`` sends them) to a fresh topic of ``--partitions`` partitions, then
reads all of them in each mode, each with a fresh consumer group:

- raw: an aiokafka loop that calls ``getmany(max_records=...)`` and counts records;
- hand-written: the same loop plus a msgspec decode of each envelope (payload typed), dict
  dispatch on ``event_type`` to a no-op handler and an explicit-offset commit per batch;
- eventkit: ``EventApp`` with one no-op handler, idempotency off, started with
  ``app.start("kafka://...", store=None)``: the real worker, lanes, dispatcher and commits.

The loops use eventkit's own consumer options (``consumer_options``), so only the code around
``getmany`` differs. Steady state: the first fetched batch is excluded (raw and hand-written
start the clock once it is counted; eventkit, which hides its batches, once the first record
is handled). A run is valid only if it counts exactly the produced records, none twice, and
the committed offsets reach the end of every partition. Modes are interleaved; the figure is
the median over repeats of each mode's rate divided by that repeat's raw rate. A raw rate
more than 30% away from 320k records/s is marked suspect (ARCHITECTURE.md, Performance budget).
The report also gives this process's CPU µs per record in the window: a figure well below the
wall time per record means the mode waited on the broker rather than on its own code.

Usage: ``python benchmarks/bench_kafka.py [--records N] [--repeats R] [--bootstrap HOST:PORT]
[--payload-bytes B] [--partitions P]``; without ``--bootstrap`` it starts an embedded Tansu
broker (``eventkit.embedded_broker``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from eventkit import EventApp
from eventkit.embedded_broker import EmbeddedBroker
from eventkit.publisher import EventPublisher
from eventkit.transports import kafka_readback
from eventkit.transports.kafka import consumer_options
from eventkit.transports.kafka_publisher import KafkaPublisher
from eventkit.transports.kafka_settings import KafkaSettings
from eventkit.worker import WorkerConfig

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from aiokafka.producer.message_accumulator import BatchBuilder

    from eventkit.ports import OutgoingRecord

EVENT_TYPE = "CONTENT_VALIDATION_REQUESTED"
# the loops fetch as much per call as the worker does
MAX_RECORDS = WorkerConfig().max_records
POLL_TIMEOUT_MS = 200
REFERENCE_RAW_RATE = 320_000.0
SUSPECT_BAND = 0.30
TARGET_RATIO = 0.5
# a mode that makes no progress for this long has hung: fail rather than wait forever
STALL_SECONDS = 60.0
MODES = ("raw", "hand-written", "eventkit")


class ContentValidationRequested(msgspec.Struct):
    """The payload; ``seq`` numbers the records so a handler can tell a second delivery."""

    seq: int
    content_id: str
    user_id: str
    title: str
    body: str
    tags: list[str]


class BareEnvelope(msgspec.Struct):
    """What the hand-written loop decodes: the same envelope, payload typed, nothing checked."""

    event_id: str
    event_type: str
    event_timestamp: datetime
    source_service: str
    correlation_id: str
    data: ContentValidationRequested
    schema_version: int = 1
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Produced:
    """The pre-produced topic: its name and each partition's end offset."""

    topic: str
    ends: dict[int, int]
    mean_bytes: float

    @property
    def total(self) -> int:
        return sum(self.ends.values())


@dataclass(frozen=True, slots=True)
class Figures:
    """One mode's steady state: records per second, and process CPU µs per record."""

    rate: float
    cpu_us: float


@dataclass(slots=True)
class Window:
    """The steady-state window: wall and process CPU time from its opening to its closing."""

    counted_at_open: int = -1
    opened_at: float = 0.0
    cpu_at_open: float = 0.0
    counted: int = 0
    elapsed: float = 0.0
    cpu: float = 0.0

    @property
    def is_open(self) -> bool:
        return self.counted_at_open >= 0

    def open(self, counted: int) -> None:
        self.counted_at_open = counted
        self.opened_at = time.perf_counter()
        self.cpu_at_open = time.process_time()

    def close(self, counted: int) -> None:
        self.elapsed = time.perf_counter() - self.opened_at
        # CPU of this process only (the broker is another): near elapsed means CPU-bound
        self.cpu = time.process_time() - self.cpu_at_open
        self.counted = counted - self.counted_at_open

    def figures(self) -> Figures:
        return Figures(self.counted / self.elapsed, self.cpu / self.counted * 1e6)


@dataclass(slots=True)
class Tally:
    """What a handler saw: each record's ``seq`` marked once; closes the window at the last."""

    expected: int
    marks: bytearray = field(init=False)
    count: int = 0
    duplicates: int = 0
    window: Window = field(default_factory=Window)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.marks = bytearray(self.expected)

    def mark(self, seq: int) -> None:
        marks = self.marks
        if marks[seq]:
            self.duplicates += 1
        marks[seq] = 1
        self.count += 1
        if self.count == self.expected:
            self.window.close(self.count)
            self.done.set()


class InvalidRunError(RuntimeError):
    """A mode did not count exactly the produced records, or did not commit to the end."""


# -- producing ----------------------------------------------------------------------------


def random_uuid() -> str:
    """A UUID-shaped random string, several times cheaper than ``str(uuid.uuid4())``."""
    digits = f"{random.getrandbits(128):032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def make_record(publisher: EventPublisher, topic: str, seq: int, body: str) -> OutgoingRecord:
    """The record ``EventPublisher`` sends for one event: JSON envelope, eventkit's headers."""
    payload = ContentValidationRequested(
        seq=seq,
        content_id=random_uuid(),
        user_id=random_uuid(),
        title="Title",
        body=body,
        tags=["news"],
    )
    _, record = publisher.record(topic, EVENT_TYPE, payload, key=payload.content_id)
    return record


def body_for(publisher: EventPublisher, payload_bytes: int, total: int) -> str:
    """A payload body that makes the encoded envelope about ``payload_bytes`` long."""
    # the median record's seq has as many digits as total // 2
    bare = len(make_record(publisher, "", total // 2, "").value)
    return "x" * max(payload_bytes - bare, 0)


async def create_topics(bootstrap: str, topic: str, partitions: int) -> None:
    """The source topic, and the dead-letter topic ``EventApp.start`` checks for."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response: Any = await admin.create_topics(
            [NewTopic(topic, partitions, 1), NewTopic(f"{topic}.dlq", 1, 1)]
        )
        for name, code, message in response.topic_errors:
            if code != 0:
                raise RuntimeError(f"creating topic {name}: {message or code}")
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, partitions: int, total: int, size: int) -> Produced:
    """Send ``total`` envelopes round-robin over partitions in full batches; all acknowledged."""
    # only its record() is used, to build exactly what it would send; it is never started
    publisher = EventPublisher(
        KafkaPublisher(bench_settings(bootstrap)), source_service="content-service"
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        # the Tansu broker refuses aiokafka's InitProducerId
        enable_idempotence=False,
        max_batch_size=512 * 1024,
        max_request_size=4 * 1024 * 1024,
    )
    await producer.start()
    try:
        body = body_for(publisher, size, total)
        batches = Batches(producer, topic, partitions)
        produced_bytes = 0
        for seq in range(total):
            record = make_record(publisher, topic, seq, body)
            produced_bytes += len(record.value)
            await batches.add(seq % partitions, record)
        ends = await batches.acknowledged()
    finally:
        await producer.stop()
    return Produced(topic, ends, produced_bytes / total)


class Batches:
    """One open batch per partition, handed to the producer when full; their futures kept."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, partitions: int) -> None:
        self._producer = producer
        self._topic = topic
        self._open = [producer.create_batch() for _ in range(partitions)]
        self._sent: list[tuple[int, int, asyncio.Future[Any]]] = []

    async def add(self, partition: int, record: OutgoingRecord) -> None:
        if _appended(self._open[partition], record):
            return
        # full: hand it over and start the next one with this record
        await self._send(partition)
        self._open[partition] = self._producer.create_batch()
        _appended(self._open[partition], record)

    async def _send(self, partition: int) -> None:
        batch = self._open[partition]
        future = await self._producer.send_batch(batch, self._topic, partition=partition)
        self._sent.append((partition, batch.record_count(), future))

    async def acknowledged(self) -> dict[int, int]:
        """Send what is left and wait for every batch; return each partition's end offset."""
        for partition, batch in enumerate(self._open):
            if batch.record_count():
                await self._send(partition)
        results = await asyncio.gather(*(future for _, _, future in self._sent))
        ends = dict.fromkeys(range(len(self._open)), 0)
        for (partition, count, _), metadata in zip(self._sent, results, strict=True):
            # batches of a partition must sit back to back from offset 0: nothing lost or extra
            if metadata.offset != ends[partition]:
                raise RuntimeError(
                    f"partition {partition}: batch at offset {metadata.offset}, expected "
                    f"{ends[partition]} (the topic must be new)"
                )
            ends[partition] += count
        return ends


def _appended(batch: BatchBuilder, record: OutgoingRecord) -> bool:
    metadata = batch.append(
        timestamp=None, key=record.key, value=record.value, headers=record.headers
    )
    return metadata is not None


# -- the modes -------------------------------------------------------------------------------


def bench_settings(bootstrap: str) -> KafkaSettings:
    """eventkit's shipped client settings, but for the producer idempotence Tansu refuses."""
    return KafkaSettings(bootstrap_servers=bootstrap, enable_idempotence=False)


async def subscribed(bootstrap: str, topic: str, group: str) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(**consumer_options(bench_settings(bootstrap), group))
    consumer.subscribe([topic])
    await consumer.start()
    return consumer


async def run_raw(bootstrap: str, produced: Produced, group: str) -> Figures:
    consumer = await subscribed(bootstrap, produced.topic, group)
    window = Window()
    try:
        total = produced.total
        count = 0
        ends: dict[int, int] = {}
        deadline = time.monotonic() + STALL_SECONDS
        while count < total:
            batches = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=MAX_RECORDS)
            for tp, records in batches.items():
                count += len(records)
                # per batch, not per record: the last offset proves nothing was skipped
                ends[tp.partition] = records[-1].offset + 1
            if batches:
                deadline = time.monotonic() + STALL_SECONDS
                if not window.is_open:  # the first batch is not steady state
                    window.open(count)
            elif time.monotonic() > deadline:
                raise InvalidRunError(f"raw: stalled at {count} of {total}")
        window.close(count)
    finally:
        await consumer.stop()
    if count != total or ends != produced.ends:
        raise InvalidRunError(f"raw: counted {count} of {total}, ended at {ends}")
    return window.figures()


async def run_hand_written(bootstrap: str, produced: Produced, group: str) -> Figures:
    tally = Tally(produced.total)
    decode = msgspec.json.Decoder(BareEnvelope).decode

    async def handle(event: ContentValidationRequested) -> None:
        tally.mark(event.seq)

    handlers = {EVENT_TYPE: handle}
    consumer = await subscribed(bootstrap, produced.topic, group)
    try:
        deadline = time.monotonic() + STALL_SECONDS
        while not tally.done.is_set():
            batches = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=MAX_RECORDS)
            for records in batches.values():
                for record in records:
                    envelope = decode(record.value or b"")
                    await handlers[envelope.event_type](envelope.data)
            if batches:
                await consumer.commit({tp: rs[-1].offset + 1 for tp, rs in batches.items()})
                deadline = time.monotonic() + STALL_SECONDS
                if not tally.window.is_open:  # the first batch is not steady state
                    tally.window.open(tally.count)
            elif time.monotonic() > deadline:
                raise InvalidRunError(f"hand-written: stalled at {tally.count}")
    finally:
        await consumer.stop()
    await check_run("hand-written", bootstrap, produced, group, tally)
    return tally.window.figures()


async def run_eventkit(bootstrap: str, produced: Produced, group: str) -> Figures:
    tally = Tally(produced.total)
    app = EventApp("bench-kafka", group_id=group, idempotency=False)

    @app.handler(EVENT_TYPE, topic=produced.topic)
    async def handle(event: ContentValidationRequested) -> None:
        tally.mark(event.seq)
        if not tally.window.is_open:  # the worker hides its batches: open at the first record
            tally.window.open(tally.count)

    # shipped defaults, but the producer idempotence Tansu refuses (the app's DLQ publisher)
    await app.start(f"kafka://{bootstrap}?enable_idempotence=false", store=None)
    try:
        await wait_for_progress(tally)
    finally:
        clean = await app.stop()
    if not clean:
        raise InvalidRunError("eventkit: stop() did not finish every started record")
    await check_run("eventkit", bootstrap, produced, group, tally)
    return tally.window.figures()


async def wait_for_progress(tally: Tally) -> None:
    """Wait until every record was handled; fail if the count stops moving."""
    seen = -1
    while not tally.done.is_set():
        if tally.count == seen:
            raise InvalidRunError(f"eventkit: stalled at {tally.count} of {tally.expected}")
        seen = tally.count
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tally.done.wait(), STALL_SECONDS)


async def check_run(
    mode: str, bootstrap: str, produced: Produced, group: str, tally: Tally
) -> None:
    """Every record once, nothing extra, and the group committed to the end of each partition."""
    if tally.count != produced.total or tally.duplicates:
        raise InvalidRunError(
            f"{mode}: handled {tally.count} of {produced.total}, {tally.duplicates} twice"
        )
    committed = await committed_offsets(bootstrap, produced, group)
    if committed != produced.ends:
        raise InvalidRunError(f"{mode}: committed {committed}, partitions end at {produced.ends}")


async def committed_offsets(bootstrap: str, produced: Produced, group: str) -> dict[int, int]:
    """The group's committed offset of each partition (-1 where none), without joining it."""
    committed = await kafka_readback.committed_offsets(bootstrap, group, produced.topic)
    return {partition: -1 if offset is None else offset for partition, offset in committed.items()}


# -- measuring and reporting -------------------------------------------------------------------


RUNNERS: dict[str, Callable[[str, Produced, str], Awaitable[Figures]]] = {
    "raw": run_raw,
    "hand-written": run_hand_written,
    "eventkit": run_eventkit,
}


async def measure(bootstrap: str, produced: Produced, repeats: int) -> list[dict[str, Figures]]:
    """Figures of every mode per repeat, modes interleaved, each run in a fresh group."""
    run_id = uuid.uuid4().hex[:8]
    runs: list[dict[str, Figures]] = []
    for repeat in range(1, repeats + 1):
        runs.append({})
        for mode in MODES:
            group = f"bench-{mode}-{run_id}-{repeat}"
            runs[-1][mode] = await RUNNERS[mode](bootstrap, produced, group)
        report_repeat(repeat, runs[-1])
    return runs


def report_header() -> None:
    rates = "".join(f"{mode:>14}" for mode in MODES)
    ratios = "".join(f"{mode + '/raw':>18}" for mode in MODES[1:])
    print(f"records/s in steady state, and the ratio to raw\n{'repeat':<8}{rates}{ratios}")


def report_repeat(repeat: int, figures: dict[str, Figures]) -> None:
    raw = figures["raw"].rate
    rates = "".join(f"{figures[mode].rate:>14,.0f}" for mode in MODES)
    ratios = "".join(f"{figures[mode].rate / raw:>18.2f}" for mode in MODES[1:])
    off = raw / REFERENCE_RAW_RATE - 1
    suspect = abs(off) > SUSPECT_BAND
    flag = f"  suspect: raw {off:+.0%} from {REFERENCE_RAW_RATE:,.0f}/s" if suspect else ""
    print(f"{repeat:<8}{rates}{ratios}{flag}", flush=True)


def report_medians(runs: list[dict[str, Figures]]) -> None:
    """Median rate, CPU per record and per-repeat ratio of each mode, and eventkit's verdict."""
    rates = "".join(f"{statistics.median(r[m].rate for r in runs):>14,.0f}" for m in MODES)
    ratios = {m: statistics.median(r[m].rate / r["raw"].rate for r in runs) for m in MODES[1:]}
    print(f"{'median':<8}{rates}" + "".join(f"{ratio:>18.2f}" for ratio in ratios.values()))
    cpu = "".join(f"{statistics.median(r[m].cpu_us for r in runs):>14.1f}" for m in MODES)
    print(f"{'cpu us':<8}{cpu}  (this process per record; the broker not included)")
    verdict = "meets" if ratios["eventkit"] >= TARGET_RATIO else "is below"
    print(f"eventkit at {ratios['eventkit']:.2f}x raw {verdict} the {TARGET_RATIO}x target")


async def bench(bootstrap: str, args: argparse.Namespace) -> None:
    topic = f"bench-kafka-{uuid.uuid4().hex[:8]}"
    await create_topics(bootstrap, topic, args.partitions)
    began = time.perf_counter()
    produced = await produce(bootstrap, topic, args.partitions, args.records, args.payload_bytes)
    print(
        f"{produced.total} envelopes of {produced.mean_bytes:.0f} bytes on {args.partitions} "
        f"partitions of {topic} at {bootstrap}, produced in {time.perf_counter() - began:.1f} s; "
        f"{args.repeats} interleaved repeats"
    )
    report_header()
    report_medians(await measure(bootstrap, produced, args.repeats))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bootstrap", help="HOST:PORT of a running broker (default: embedded)")
    parser.add_argument("--payload-bytes", type=int, default=480, help="envelope size to aim at")
    parser.add_argument("--partitions", type=int, default=3)
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error("--repeats must be at least 3: the figure is a median of repeats")
    if args.records < args.partitions * MAX_RECORDS:
        parser.error("--records is too small to leave a steady state after the first batch")
    return args


def main() -> int:
    args = parse_args()
    began = time.perf_counter()
    if args.bootstrap:
        asyncio.run(bench(args.bootstrap, args))
    else:
        with EmbeddedBroker() as broker:
            asyncio.run(bench(broker.bootstrap, args))
    print(f"benchmark run time {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
