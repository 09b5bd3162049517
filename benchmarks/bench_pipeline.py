"""Per-record overhead of eventkit's default chain over a bare decode-and-call loop.

Runs, interleaved and repeated, on the same pre-encoded envelopes (about 480 bytes each):

- bare: ``msgspec`` decodes the envelope with its typed payload and calls the handler;
- eventkit, idempotency off: a partition lane runs the chain as shipped (observe, dead
  letter guard, route, decode, typed payload, retry, offset tracking) into a no-op handler;
- eventkit, in-memory store: the same with idempotency claims on the in-memory store;
- floor, idempotency off / floor, in-memory store: the work the contract requires per record
  (state object, header bounds, routing, checks, decode, handler, offset tracking, and with
  the store its claims, starts and DONE marks), inlined with no framework around it. No
  implementation does less; the distance to it is what eventkit's structure costs.

Prints µs per record for each, the added µs over bare and the ratio, as medians of the runs.
Usage: ``python benchmarks/bench_pipeline.py [--records N] [--repeats R] [--check]``; with
``--check`` it exits 1 when the added cost is over budget (1.5 µs, 3 µs) by more than 20%.
Timings on a shared machine drift; for a repeatable figure count instructions instead:
``valgrind --tool=callgrind python benchmarks/bench_pipeline.py --records N --once MODE`` for
two sizes N, and take the difference per record.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import secrets
import statistics
import sys
import time
import uuid
import zlib
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from eventkit import EventApp
from eventkit.clock import SystemClock
from eventkit.codecs.wire import TypedWireEvent, WireEvent
from eventkit.delivery import Delivery
from eventkit.envelope import EventEnvelope
from eventkit.idempotency import InMemoryIdempotencyStore
from eventkit.offsets import PartitionOffsets
from eventkit.ports import TopicPartition
from eventkit.publisher import encode_envelope, envelope_headers
from eventkit.transports.memory import MemoryBroker, StoredRecord
from eventkit.worker import WorkerConfig
from eventkit.worker.lane import Lane, Progress

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

TOPIC = "bench-events"
EVENT_TYPE = "CONTENT_VALIDATION_REQUESTED"
FETCH_BATCH = 500
# the in-memory path claims up to 256 keys per store call by default
CLAIM_CHUNK = 256
BUDGET_US = {"eventkit, idempotency off": 1.5, "eventkit, in-memory store": 3.0}


class ContentValidationRequested(msgspec.Struct):
    content_id: str
    user_id: str
    title: str
    body: str
    tags: list[str]


class BareEnvelope(msgspec.Struct):
    """What a hand-written loop decodes: the same envelope, payload typed, nothing checked."""

    event_id: str
    event_type: str
    event_timestamp: datetime
    source_service: str
    correlation_id: str
    data: ContentValidationRequested
    schema_version: int = 1
    metadata: dict[str, Any] | None = None


def make_records(count: int) -> list[StoredRecord]:
    rng = random.Random(7)
    records = []
    for offset in range(count):
        payload = ContentValidationRequested(
            content_id=str(uuid.UUID(int=rng.getrandbits(128))),
            user_id=str(uuid.UUID(int=rng.getrandbits(128))),
            title="Title",
            body="lorem ipsum",
            tags=["news"],
        )
        envelope = EventEnvelope(
            event_type=EVENT_TYPE,
            data=payload,
            source_service="content-service",
            event_timestamp=datetime(2026, 1, 1, tzinfo=UTC),
            metadata={"traceparent": f"00-{'a' * 32}-{'b' * 16}-01"},
        )
        records.append(
            StoredRecord(
                topic=TOPIC,
                partition=0,
                offset=offset,
                timestamp=1_700_000_000_000,
                key=payload.content_id.encode(),
                value=encode_envelope(envelope),
                headers=tuple(envelope_headers(envelope, None)),
            )
        )
    return records


async def run_bare(records: list[StoredRecord]) -> float:
    decoder = msgspec.json.Decoder(BareEnvelope)
    handled = 0

    async def handler(payload: ContentValidationRequested) -> None:
        nonlocal handled
        handled += 1

    started = time.perf_counter()
    for record in records:
        assert record.value is not None
        await handler(decoder.decode(record.value).data)
    elapsed = time.perf_counter() - started
    assert handled == len(records)
    return elapsed


class _FloorEntry:
    """The least an in-process idempotency store keeps per key."""

    __slots__ = ("attempts", "deadline", "digest", "outcome", "token")

    def __init__(self, token: str, deadline: float) -> None:
        self.token: str | None = token
        self.deadline = deadline
        self.attempts = 0
        self.outcome: str | None = None
        self.digest = ""


async def run_floor(records: list[StoredRecord], *, store: bool) -> float:  # noqa: PLR0912, PLR0915
    """The work the contract requires per record, inlined: no layers, no framework.

    A state object per record (``Delivery``); one pass over the headers with their count and
    byte bounds and the routing header; the route lookup; the value bound; the typed decode
    (two passes with ``store``, to hash the raw payload); the ``event_id`` and type checks;
    the handler; offset tracking; an outcome count. With ``store``, lease-sized chunks of
    keys claimed in a dict, each start counted and each DONE written token-checked.
    A reference for the budgets: no implementation with a per-record state object can do less
    and keep R4 and R9.
    """
    one_pass = msgspec.json.Decoder(TypedWireEvent[ContentValidationRequested]).decode
    wire = msgspec.json.Decoder(WireEvent).decode
    payload_decoder = msgspec.json.Decoder(ContentValidationRequested).decode
    read_headers = frozenset({"event_type", "ce_type", "ce_specversion", "replay_id"})
    handled = 0

    async def handler(payload: ContentValidationRequested) -> None:
        nonlocal handled
        handled += 1

    routes = {TOPIC: {EVENT_TYPE.encode(): handler}}
    counts = {"handled": 0}
    entries: dict[str, _FloorEntry] = {}
    namespace = f"eventkit:bench-service:bench-service\x1e{len(EVENT_TYPE)}:{EVENT_TYPE}"
    monotonic = time.monotonic
    started = time.perf_counter()
    for first in range(0, len(records), FETCH_BATCH):
        batch = [Delivery(record) for record in records[first : first + FETCH_BATCH]]
        unfinished = deque(delivery.record.offset for delivery in batch)
        for chunk_start in range(0, len(batch), CLAIM_CHUNK):
            chunk = batch[chunk_start : chunk_start + CLAIM_CHUNK]
            calls = []
            for delivery in chunk:  # route and decode (the guard does so to claim ahead)
                record = delivery.record
                headers = record.headers
                if not headers or len(headers) > 64:
                    raise ValueError("header count")
                size = 0
                type_header = None
                for name, header_value in headers:
                    size += len(name) + len(header_value)
                    if name in read_headers and type_header is None:
                        type_header = header_value
                if size > 16 * 1024:
                    raise ValueError("header bytes")
                calls.append(routes[record.topic][type_header or b""])
                value = record.value
                if value is None or len(value) > 1024 * 1024:
                    raise ValueError("record bytes")
                event = wire(value) if store else one_pass(value)
                event_id = event.event_id
                if (
                    event.event_type != EVENT_TYPE
                    or event.specversion is not None
                    or not event_id.isascii()
                    or not event_id.isprintable()
                    or " " in event_id
                ):
                    raise ValueError("envelope")
                delivery.event = event
                delivery.payload = payload_decoder(event.data) if store else event.data
                delivery.decoded = True
            if store:  # one claim for the chunk
                now = monotonic()
                token = secrets.token_hex(12)
                for delivery in chunk:
                    key = f"{namespace}{delivery.event.event_id if delivery.event else ''}"
                    delivery.idempotency_key = key
                    entries[key] = _FloorEntry(token, now + 30.0)
            for delivery, call in zip(chunk, calls, strict=True):
                if store:  # count the start, token-checked
                    entry = entries[delivery.idempotency_key or ""]
                    if entry.token != token or monotonic() >= entry.deadline:
                        raise ValueError("lease")
                    entry.attempts += 1
                await call(delivery.payload)
                if store:  # DONE, token-checked, with the payload hash
                    if entry.token != token or monotonic() >= entry.deadline:
                        raise ValueError("lease")
                    entry.outcome = "handled"
                    entry.digest = hex(zlib.crc32(delivery.event.data))  # type: ignore[union-attr]
                    entry.token = None
                unfinished.popleft()
                counts["handled"] += 1
    elapsed = time.perf_counter() - started
    assert handled == len(records)
    return elapsed


class _Owner:
    """Stands in for the worker: lanes only ask it to pause, which the benchmark ignores."""

    def want_pause(self, tp: TopicPartition, reason: str, paused: bool) -> None:
        del tp, reason, paused


async def run_eventkit(records: list[StoredRecord], *, idempotency: bool) -> float:
    app = EventApp("bench-service", idempotency=idempotency)
    handled = 0

    @app.handler(EVENT_TYPE, topic=TOPIC)
    async def handle(event: ContentValidationRequested) -> None:
        nonlocal handled
        handled += 1

    clock = SystemClock()
    broker = MemoryBroker()
    store = InMemoryIdempotencyStore(clock) if idempotency else None
    dispatcher = app.build(publisher=broker.publisher(), store=store, clock=clock)
    progress = Progress()
    config = WorkerConfig(max_buffered=FETCH_BATCH + 1)
    lane = Lane(
        TopicPartition(TOPIC, 0),
        epoch=1,
        dispatch=dispatcher.dispatch,
        offsets=PartitionOffsets(),
        owner=_Owner(),
        progress=progress,
        clock=clock,
        config=config,
    )
    started = time.perf_counter()
    lane.start()
    # batches of the size the fetch loop hands over, each drained before the next
    for first in range(0, len(records), FETCH_BATCH):
        batch = records[first : first + FETCH_BATCH]
        lane.enqueue(batch)
        # a lane has no completion hook; yielding lets it run without waiting on time
        while lane.queued or lane.busy:  # noqa: ASYNC110
            await asyncio.sleep(0)
    assert progress.finished == len(records)
    elapsed = time.perf_counter() - started
    lane.close()
    assert lane.task is not None
    await lane.task
    assert handled == len(records), (handled, len(records))
    return elapsed


async def measure(records: list[StoredRecord], repeats: int) -> dict[str, list[float]]:
    modes: dict[str, Callable[[], Awaitable[float]]] = {
        "bare": lambda: run_bare(records),
        "eventkit, idempotency off": lambda: run_eventkit(records, idempotency=False),
        "eventkit, in-memory store": lambda: run_eventkit(records, idempotency=True),
        "floor, idempotency off": lambda: run_floor(records, store=False),
        "floor, in-memory store": lambda: run_floor(records, store=True),
    }
    per_record: dict[str, list[float]] = {name: [] for name in modes}
    for mode in modes.values():  # warm-up: imports, decoder caches
        await mode()
    for _ in range(repeats):
        for name, mode in modes.items():  # interleaved, so drift hits every mode alike
            per_record[name].append(await mode() / len(records) * 1e6)
    return per_record


async def run_once(records: list[StoredRecord], mode: str) -> None:
    if mode == "bare":
        await run_bare(records)
    elif mode.startswith("floor"):
        await run_floor(records, store=mode == "floor-store")
    elif mode != "none":
        await run_eventkit(records, idempotency=mode == "store")


def report(per_record: dict[str, list[float]]) -> dict[str, float]:
    bare = per_record["bare"]
    added: dict[str, float] = {}
    print(f"{'mode':<28}{'us/record':>10}{'added us':>10}{'ratio':>8}")
    for name, runs in per_record.items():
        median = statistics.median(runs)
        extra = statistics.median(run - base for run, base in zip(runs, bare, strict=True))
        ratio = statistics.median(base / run for run, base in zip(runs, bare, strict=True))
        added[name] = extra
        print(f"{name:<28}{median:>10.2f}{extra:>10.2f}{ratio:>8.2f}")
    return added


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--check", action="store_true", help="fail when over budget by >20%")
    parser.add_argument(
        "--once",
        choices=["none", "bare", "off", "store", "floor-off", "floor-store"],
        help="run one mode once, silently: for instruction counts under valgrind --tool=callgrind"
        " (the per-record cost is the difference between two --records sizes, minus 'none')",
    )
    args = parser.parse_args()
    records = make_records(args.records)
    # the pre-built records stay alive all run: keep the collector from walking them again and
    # again, which would charge each mode by how much it allocates, not by what it does
    gc.freeze()
    if args.once is not None:
        asyncio.run(run_once(records, args.once))
        return 0
    size = statistics.mean(len(record.value or b"") for record in records)
    print(f"{args.records} records of {size:.0f} bytes, {args.repeats} interleaved repeats")
    added = report(asyncio.run(measure(records, args.repeats)))
    if not args.check:
        return 0
    over = {
        name: (added[name], budget)
        for name, budget in BUDGET_US.items()
        if added[name] > budget * 1.2
    }
    for name, (value, budget) in over.items():
        print(f"over budget: {name} adds {value:.2f} us, budget {budget} us (+20%)")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
