"""End-to-end consume rate over Kafka: eventkit's worker against raw aiokafka loops.

Pre-produces ``--records`` eventkit JSON envelopes (about 480 bytes, with the ``event_type``
header, as ``EventPublisher`` sends them) to a fresh topic of ``--partitions`` partitions, then
reads all of them in each mode, each with a fresh consumer group:

- raw: an aiokafka loop that calls ``getmany(max_records=...)`` and counts records;
- hand-written: the same loop plus a msgspec decode of each envelope (payload typed), dict
  dispatch on ``event_type`` to a no-op handler and an explicit-offset commit per batch;
- eventkit: ``EventApp`` with one no-op handler, idempotency off, started with
  ``app.start("kafka://...", store=None)``: the real worker, lanes, dispatcher and commits.

With ``--idempotency`` two more modes run in the same interleaved repeats, on a private
``redis-server`` (``EmbeddedRedis``) emptied with FLUSHDB before each of their runs:

- hand-written+claim: the hand-written loop plus, per ``getmany`` batch, one Lua call that
  claims every record's key (``SET key token NX PX lease``) before handling and one that marks
  the claimed keys done (token-checked ``SET key done PX ttl``) after, then the commit: the
  least a claim-and-complete loop with one script call per chunk can do;
- eventkit+redis: the eventkit mode with ``idempotency=True`` over ``RedisIdempotencyStore``.

Both use eventkit's keys (``keys.idempotency_key``: namespace of service and group, event type,
``event_id``). Besides the checks of the other modes, a run of either is valid only if Redis
then holds exactly one done key per record (counted with SCAN). Their report adds the
``redis-server`` CPU µs per record in the window and the EVALSHA calls per record (``INFO
commandstats`` before and after the run), and a verdict against the 0.2x target.

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
[--payload-bytes B] [--partitions P] [--idempotency]``; without ``--bootstrap`` it starts an
embedded Tansu broker (``eventkit.embedded_broker``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from eventkit import EventApp
from eventkit.app import SEVEN_DAYS
from eventkit.embedded_broker import EmbeddedBroker
from eventkit.embedded_redis import EmbeddedRedis
from eventkit.idempotency import RedisIdempotencyStore, RedisSettings
from eventkit.keys import key_prefix, namespace_for, storage_key
from eventkit.publisher import EventPublisher
from eventkit.transports import kafka_readback
from eventkit.transports.kafka import consumer_options
from eventkit.transports.kafka_publisher import KafkaPublisher
from eventkit.transports.kafka_settings import KafkaSettings
from eventkit.worker import WorkerConfig

if TYPE_CHECKING:
    from collections.abc import Sequence

    import redis.asyncio
    from aiokafka.producer.message_accumulator import BatchBuilder

    from eventkit.ports import IdempotencyStore, OutgoingRecord

EVENT_TYPE = "CONTENT_VALIDATION_REQUESTED"
# the loops fetch as much per call as the worker does
MAX_RECORDS = WorkerConfig().max_records
POLL_TIMEOUT_MS = 200
REFERENCE_RAW_RATE = 320_000.0
SUSPECT_BAND = 0.30
TARGET_RATIO = 0.5
# with idempotency on (ARCHITECTURE.md: a hand-written claim-and-complete loop is about 0.25x)
REDIS_TARGET_RATIO = 0.2
# a mode that makes no progress for this long has hung: fail rather than wait forever
STALL_SECONDS = 60.0
SERVICE = "bench-kafka"
# eventkit's defaults, so both Redis modes write the same leases and done marks
LEASE_MS = 30_000
DONE_TTL_MS = int(SEVEN_DAYS * 1000)
DONE_VALUE = b"handled"
# a Redis call that takes this long has hung: fail the run
REDIS_TIMEOUT_SECONDS = 10.0

#: Claim every key of a batch: ``SET NX PX`` each; replies 1 (claimed) or 0, in key order.
#: KEYS: the storage keys; ARGV[1]: the batch's token; ARGV[2]: the lease, ms.
CLAIM_BATCH = """
local claimed = {}
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2]) then
    claimed[i] = 1
  else
    claimed[i] = 0
  end
end
return claimed
"""

#: Mark claimed keys done where the batch's token still holds them; replies how many.
#: KEYS: the claimed storage keys; ARGV[1]: the token; ARGV[2]: the done value; ARGV[3]: TTL, ms.
COMPLETE_BATCH = """
local done = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('SET', key, ARGV[2], 'PX', ARGV[3])
    done = done + 1
  end
end
return done
"""


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
    """One mode's steady state: records per second, and process CPU µs per record; for the
    Redis modes also ``redis-server``'s CPU µs per record and EVALSHA calls per record."""

    rate: float
    cpu_us: float
    redis_cpu_us: float | None = None
    evalsha_per_record: float | None = None


@dataclass(slots=True)
class Window:
    """The steady-state window: wall and process CPU time from its opening to its closing."""

    counted_at_open: int = -1
    opened_at: float = 0.0
    cpu_at_open: float = 0.0
    counted: int = 0
    elapsed: float = 0.0
    cpu: float = 0.0
    # CPU seconds of another process (redis-server) to charge to the window, if any
    other_cpu: Callable[[], float] | None = None
    other_at_open: float = 0.0
    other: float = 0.0

    @property
    def is_open(self) -> bool:
        return self.counted_at_open >= 0

    def open(self, counted: int) -> None:
        self.counted_at_open = counted
        self.opened_at = time.perf_counter()
        self.cpu_at_open = time.process_time()
        if self.other_cpu is not None:
            self.other_at_open = self.other_cpu()

    def close(self, counted: int) -> None:
        self.elapsed = time.perf_counter() - self.opened_at
        # CPU of this process only (the broker is another): near elapsed means CPU-bound
        self.cpu = time.process_time() - self.cpu_at_open
        if self.other_cpu is not None:
            self.other = self.other_cpu() - self.other_at_open
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
    await run_app("eventkit", bootstrap, produced, group, tally, store=None)
    return tally.window.figures()


async def run_app(
    mode: str,
    bootstrap: str,
    produced: Produced,
    group: str,
    tally: Tally,
    *,
    store: IdempotencyStore | None,
) -> None:
    """Run ``EventApp`` with one no-op handler until it handled every record, then check it;
    idempotency is on exactly when a store is given."""
    app = EventApp(SERVICE, group_id=group, idempotency=store is not None)

    @app.handler(EVENT_TYPE, topic=produced.topic)
    async def handle(event: ContentValidationRequested) -> None:
        tally.mark(event.seq)
        if not tally.window.is_open:  # the worker hides its batches: open at the first record
            tally.window.open(tally.count)

    # shipped defaults, but the producer idempotence Tansu refuses (the app's DLQ publisher)
    await app.start(f"kafka://{bootstrap}?enable_idempotence=false", store=store)
    try:
        await wait_for_progress(mode, tally)
    finally:
        clean = await app.stop()
    if not clean:
        raise InvalidRunError(f"{mode}: stop() did not finish every started record")
    await check_run(mode, bootstrap, produced, group, tally)


async def wait_for_progress(mode: str, tally: Tally) -> None:
    """Wait until every record was handled; fail if the count stops moving."""
    seen = -1
    while not tally.done.is_set():
        if tally.count == seen:
            raise InvalidRunError(f"{mode}: stalled at {tally.count} of {tally.expected}")
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


# -- the modes with idempotency on (Redis) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RedisSide:
    """The benchmark's ``redis-server``: its client (no retries) and its process, for CPU."""

    client: redis.asyncio.Redis
    pid: int

    async def fresh(self) -> int:
        """Empty the database so the run claims fresh keys; return EVALSHA calls so far."""
        await self.client.flushdb()
        return await self.evalsha_calls()

    async def evalsha_calls(self) -> int:
        stats = await self.client.info("commandstats")
        # only the calls a client made: commands run inside scripts are counted separately
        return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))

    def cpu_seconds(self) -> float:
        """``redis-server``'s user and system CPU seconds so far (Linux ``/proc``)."""
        with open(f"/proc/{self.pid}/stat", encoding="ascii") as stat:
            # fields after the command name, which may hold spaces: utime and stime are 14, 15
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def count_done(self, namespace: str, hash_field: str | None) -> int:
        """Keys of ``namespace`` marked done: ``hash_field`` of a hash, else the string value,
        is ``DONE_VALUE``. SCAN, not DBSIZE, so no key of anything else is counted."""
        count = 0
        names: list[Any] = []
        async for name in self.client.scan_iter(match=f"{namespace}:*", count=1000):
            names.append(name)
            if len(names) == 1000:
                count += await self._count_done(names, hash_field)
                names = []
        return count + await self._count_done(names, hash_field)

    async def _count_done(self, names: list[Any], hash_field: str | None) -> int:
        # one round trip per SCAN page rather than per key
        async with self.client.pipeline(transaction=False) as pipe:
            for name in names:
                if hash_field is None:
                    pipe.get(name)
                else:
                    pipe.hget(name, hash_field)
            values = await pipe.execute()
        return sum(1 for value in values if value == DONE_VALUE)

    async def figures(
        self,
        mode: str,
        namespace: str,
        hash_field: str | None,
        *,
        window: Window,
        evalsha_before: int,
        records: int,
    ) -> Figures:
        """The run's figures with Redis's share; fails unless every record is marked done."""
        done = await self.count_done(namespace, hash_field)
        if done != records:
            raise InvalidRunError(f"{mode}: {done} keys done in Redis, {records} records")
        evalsha = await self.evalsha_calls() - evalsha_before
        base = window.figures()
        return Figures(
            base.rate,
            base.cpu_us,
            redis_cpu_us=window.other / window.counted * 1e6,
            evalsha_per_record=evalsha / records,
        )


async def run_hand_written_claim(
    side: RedisSide, bootstrap: str, produced: Produced, group: str
) -> Figures:
    """The hand-written loop with one Lua claim and one Lua completion per ``getmany`` batch."""
    evalsha_before = await side.fresh()
    client = side.client
    claim_sha = await client.script_load(CLAIM_BATCH)
    complete_sha = await client.script_load(COMPLETE_BATCH)
    namespace = namespace_for(SERVICE, group)
    # one prefix per event type, as eventkit builds its keys
    prefixes: dict[str, str] = {}
    tally = Tally(produced.total)
    tally.window.other_cpu = side.cpu_seconds
    decode = msgspec.json.Decoder(BareEnvelope).decode

    async def handle(event: ContentValidationRequested) -> None:
        tally.mark(event.seq)

    handlers = {EVENT_TYPE: handle}
    consumer = await subscribed(bootstrap, produced.topic, group)
    try:
        deadline = time.monotonic() + STALL_SECONDS
        while not tally.done.is_set():
            batches = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=MAX_RECORDS)
            if batches:
                envelopes = [decode(r.value or b"") for rs in batches.values() for r in rs]
                keys = []
                for envelope in envelopes:
                    prefix = prefixes.get(envelope.event_type)
                    if prefix is None:
                        prefix = prefixes[envelope.event_type] = key_prefix(
                            namespace, envelope.event_type
                        )
                    keys.append(storage_key(prefix + envelope.event_id))
                token = secrets.token_hex(12)
                claimed = await client.evalsha(claim_sha, len(keys), *keys, token, LEASE_MS)
                done_keys = []
                for envelope, key, won in zip(envelopes, keys, claimed, strict=True):
                    # a key not claimed belongs to another delivery: skipped, as a duplicate
                    # would be (none here, so a skip fails the run's count)
                    if won:
                        await handlers[envelope.event_type](envelope.data)
                        done_keys.append(key)
                marked = await client.evalsha(
                    complete_sha, len(done_keys), *done_keys, token, DONE_VALUE, DONE_TTL_MS
                )
                if marked != len(done_keys):
                    raise InvalidRunError(f"hand-written+claim: {marked} of {len(done_keys)} done")
                await consumer.commit({tp: rs[-1].offset + 1 for tp, rs in batches.items()})
                deadline = time.monotonic() + STALL_SECONDS
                if not tally.window.is_open:  # the first batch is not steady state
                    tally.window.open(tally.count)
            elif time.monotonic() > deadline:
                raise InvalidRunError(f"hand-written+claim: stalled at {tally.count}")
    finally:
        await consumer.stop()
    await check_run("hand-written+claim", bootstrap, produced, group, tally)
    # its keys are strings: the token while leased, DONE_VALUE once done
    return await side.figures(
        "hand-written+claim",
        namespace,
        None,
        window=tally.window,
        evalsha_before=evalsha_before,
        records=produced.total,
    )


async def run_eventkit_redis(
    side: RedisSide, bootstrap: str, produced: Produced, group: str
) -> Figures:
    """The eventkit mode with ``idempotency=True`` over ``RedisIdempotencyStore``."""
    evalsha_before = await side.fresh()
    tally = Tally(produced.total)
    tally.window.other_cpu = side.cpu_seconds
    store = RedisIdempotencyStore(side.client)
    await run_app("eventkit+redis", bootstrap, produced, group, tally, store=store)
    namespace = namespace_for(SERVICE, group)
    # the store's keys are hashes; "out" holds the outcome once done (redis_scripts)
    return await side.figures(
        "eventkit+redis",
        namespace,
        "out",
        window=tally.window,
        evalsha_before=evalsha_before,
        records=produced.total,
    )


def connect_redis(server: EmbeddedRedis) -> redis.asyncio.Redis:
    """The worker's own client settings (no retries): a failed call fails the run rather
    than hiding a stall."""
    return RedisSettings.from_url(
        server.url,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
    ).client()


# -- measuring and reporting -------------------------------------------------------------------


Runner = Callable[[str, Produced, str], Awaitable[Figures]]
RUNNERS: dict[str, Runner] = {
    "raw": run_raw,
    "hand-written": run_hand_written,
    "eventkit": run_eventkit,
}


def runners(side: RedisSide | None) -> dict[str, Runner]:
    """The modes to run, in their interleaving order: the Redis ones only with a server."""
    if side is None:
        return RUNNERS
    return {
        **RUNNERS,
        "hand-written+claim": lambda b, p, g: run_hand_written_claim(side, b, p, g),
        "eventkit+redis": lambda b, p, g: run_eventkit_redis(side, b, p, g),
    }


async def measure(
    bootstrap: str, produced: Produced, repeats: int, modes: dict[str, Runner]
) -> list[dict[str, Figures]]:
    """Figures of every mode per repeat, modes interleaved, each run in a fresh group."""
    run_id = uuid.uuid4().hex[:8]
    runs: list[dict[str, Figures]] = []
    for repeat in range(1, repeats + 1):
        runs.append({})
        for mode, run in modes.items():
            # a group id of letters, digits and dashes, whatever the mode's name holds
            group = f"bench-{mode.replace('+', '-')}-{run_id}-{repeat}"
            runs[-1][mode] = await run(bootstrap, produced, group)
        report_repeat(repeat, runs[-1])
    return runs


def rate_width(mode: str) -> int:
    return max(14, len(mode) + 2)


def ratio_width(mode: str) -> int:
    return max(18, len(mode) + 6)


def report_header(modes: Sequence[str]) -> None:
    rates = "".join(f"{mode:>{rate_width(mode)}}" for mode in modes)
    ratios = "".join(f"{mode + '/raw':>{ratio_width(mode)}}" for mode in modes[1:])
    print(f"records/s in steady state, and the ratio to raw\n{'repeat':<8}{rates}{ratios}")


def report_repeat(repeat: int, figures: dict[str, Figures]) -> None:
    raw = figures["raw"].rate
    rates = "".join(f"{f.rate:>{rate_width(m)},.0f}" for m, f in figures.items())
    ratios = "".join(
        f"{f.rate / raw:>{ratio_width(m)}.2f}" for m, f in figures.items() if m != "raw"
    )
    off = raw / REFERENCE_RAW_RATE - 1
    suspect = abs(off) > SUSPECT_BAND
    flag = f"  suspect: raw {off:+.0%} from {REFERENCE_RAW_RATE:,.0f}/s" if suspect else ""
    print(f"{repeat:<8}{rates}{ratios}{flag}", flush=True)


def median_of(
    runs: list[dict[str, Figures]], mode: str, figure: Callable[[Figures], float]
) -> float:
    return statistics.median(figure(run[mode]) for run in runs)


def report_medians(runs: list[dict[str, Figures]]) -> None:
    """Median rate, CPU per record and per-repeat ratio of each mode, and the verdicts."""
    modes = list(runs[0])
    rates = "".join(f"{median_of(runs, m, lambda f: f.rate):>{rate_width(m)},.0f}" for m in modes)
    ratios = {m: statistics.median(r[m].rate / r["raw"].rate for r in runs) for m in modes[1:]}
    print(
        f"{'median':<8}{rates}"
        + "".join(f"{ratio:>{ratio_width(m)}.2f}" for m, ratio in ratios.items())
    )
    cpu = "".join(f"{median_of(runs, m, lambda f: f.cpu_us):>{rate_width(m)}.1f}" for m in modes)
    print(f"{'cpu us':<8}{cpu}  (this process per record; the broker not included)")
    redis_modes = [m for m in modes if runs[0][m].evalsha_per_record is not None]
    if redis_modes:
        report_redis(runs, modes, redis_modes)
    verdict = "meets" if ratios["eventkit"] >= TARGET_RATIO else "is below"
    print(f"eventkit at {ratios['eventkit']:.2f}x raw {verdict} the {TARGET_RATIO}x target")
    if "eventkit+redis" in ratios:
        ratio = ratios["eventkit+redis"]
        verdict = "meets" if ratio >= REDIS_TARGET_RATIO else "is below"
        print(
            f"eventkit+redis at {ratio:.2f}x raw {verdict} the {REDIS_TARGET_RATIO}x target "
            f"(hand-written+claim at {ratios['hand-written+claim']:.2f}x)"
        )


def report_redis(runs: list[dict[str, Figures]], modes: list[str], redis_modes: list[str]) -> None:
    """Rows only the Redis modes fill: Redis's CPU and its script calls, per record."""

    def row(figure: Callable[[Figures], float | None], spec: str) -> str:
        cells = []
        for mode in modes:
            width = rate_width(mode)
            if mode in redis_modes:
                value = median_of(runs, mode, lambda f: figure(f) or 0.0)
                cells.append(f"{value:>{width}{spec}}")
            else:
                cells.append(" " * width)
        return "".join(cells)

    print(f"{'redis us':<8}{row(lambda f: f.redis_cpu_us, '.1f')}  (redis-server CPU per record)")
    print(f"{'evalsha':<8}{row(lambda f: f.evalsha_per_record, '.3f')}  (script calls per record)")


async def bench(bootstrap: str, args: argparse.Namespace, server: EmbeddedRedis | None) -> None:
    topic = f"bench-kafka-{uuid.uuid4().hex[:8]}"
    await create_topics(bootstrap, topic, args.partitions)
    began = time.perf_counter()
    produced = await produce(bootstrap, topic, args.partitions, args.records, args.payload_bytes)
    print(
        f"{produced.total} envelopes of {produced.mean_bytes:.0f} bytes on {args.partitions} "
        f"partitions of {topic} at {bootstrap}, produced in {time.perf_counter() - began:.1f} s; "
        f"{args.repeats} interleaved repeats"
    )
    side = None if server is None else RedisSide(connect_redis(server), server.pid)
    try:
        modes = runners(side)
        report_header(list(modes))
        report_medians(await measure(bootstrap, produced, args.repeats, modes))
    finally:
        if side is not None:
            await side.client.aclose()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bootstrap", help="HOST:PORT of a running broker (default: embedded)")
    parser.add_argument("--payload-bytes", type=int, default=480, help="envelope size to aim at")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument(
        "--idempotency",
        action="store_true",
        help="also run hand-written+claim and eventkit+redis on an embedded redis-server",
    )
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error("--repeats must be at least 3: the figure is a median of repeats")
    if args.records < args.partitions * MAX_RECORDS:
        parser.error("--records is too small to leave a steady state after the first batch")
    return args


def main() -> int:
    args = parse_args()
    began = time.perf_counter()
    with contextlib.ExitStack() as stack:
        bootstrap = args.bootstrap or stack.enter_context(EmbeddedBroker()).bootstrap
        server = stack.enter_context(EmbeddedRedis()) if args.idempotency else None
        asyncio.run(bench(bootstrap, args, server))
    print(f"benchmark run time {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
