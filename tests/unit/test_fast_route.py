"""The route table's fast path: the common record in one call, anything else to ``resolve``.

Whatever the record, the fast path either declines it or routes it exactly as ``resolve``
followed by the decode step would: same route, same envelope, same payload.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, cast

import msgspec
import pydantic
from hypothesis import example, given, settings
from hypothesis import strategies as st

from eventkit import Delivery, EventApp, EventEnvelope
from eventkit.clock import SystemClock
from eventkit.codecs.limits import DecodeLimits
from eventkit.errors import PoisonRecordError
from eventkit.invoke import envelope_of
from eventkit.middleware.decode import decode_delivery
from eventkit.publisher import encode_envelope, envelope_headers
from eventkit.transports.memory import MemoryBroker

if TYPE_CHECKING:
    from eventkit.middleware.route import RouteTable

TOPIC = "orders"
# Kafka allows a null header value (aiokafka gives ``None``); the port's type leaves it out
NULL = cast("bytes", None)
LIMITS = DecodeLimits(max_header_count=6, max_header_bytes=400, max_record_bytes=600)


class OrderPlaced(msgspec.Struct):
    order_id: str
    amount: int


class OrderNoted(pydantic.BaseModel):
    order_id: str


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    partition: int = 0
    offset: int = 0
    timestamp: int = 0
    key: bytes | None = None


def route_table() -> RouteTable:
    """Routes of an app with a one-pass handler (a Struct) and a two-pass one (pydantic)."""
    app = EventApp("shop", limits=LIMITS)

    @app.handler("order.placed", topic=TOPIC)
    async def placed(order: OrderPlaced) -> None:
        del order

    @app.handler("order.shipped", topic=TOPIC)
    async def shipped(order: OrderPlaced) -> None:
        del order

    @app.handler("order.noted", topic=TOPIC)
    async def noted(note: OrderNoted) -> None:
        del note

    broker = MemoryBroker()
    return app.build(publisher=broker.publisher(), store=None, clock=SystemClock()).routes


def body(event_type: str, event_id: str, data: object) -> bytes:
    return encode_envelope(
        EventEnvelope(
            event_type=event_type,
            data=data,
            source_service="shop",
            event_id=event_id,
            event_timestamp=datetime(2026, 1, 1, tzinfo=UTC),
        )
    )


VALUES = st.one_of(
    st.builds(
        body,
        st.sampled_from(["order.placed", "order.noted", "order.unknown"]),
        st.sampled_from(["e-1", "e 2", "é-3", "x" * 129, "y" * 100]),
        st.one_of(
            st.builds(OrderPlaced, st.just("o-1"), st.integers(0, 10)),
            st.just({"order_id": "o-1"}),
            st.just("not an object"),
        ),
    ),
    st.just(b"not json"),
    st.just(b'{"specversion": "1.0", "id": "1", "source": "s", "type": "order.placed"}'),
    st.just(b"[" * 2000),
    st.just(b"x" * 700),
    st.none(),
)
HEADER_NAMES = st.sampled_from(
    ["event_type", "event_id", "content-type", "ce_type", "ce_specversion", "replay_id", "x"]
)
HEADER_VALUES = st.one_of(
    st.sampled_from([b"order.placed", b"order.noted", b"order.unknown", b"\xff", b"1.0"]),
    st.just(b"v" * 500),
    st.just(NULL),
)
TYPE_HEADER = st.tuples(
    st.just("event_type"), st.sampled_from([b"order.placed", b"order.noted", b"order.unknown"])
)
RECORDS = st.builds(
    Record,
    topic=st.sampled_from([TOPIC, TOPIC, "other"]),
    value=VALUES,
    # mostly a routing header first, then anything: the fast path's own case and its edges
    headers=st.tuples(
        st.lists(TYPE_HEADER, max_size=2),
        st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=5),
    ).map(lambda parts: (*parts[0], *parts[1])),
)


def resolved_slowly(routes: RouteTable, record: Record) -> tuple[object, ...] | None:
    """What ``resolve`` and the decode step make of ``record``; ``None`` if not routed."""
    delivery = Delivery(record)
    try:
        route = routes.resolve(delivery)
        if route is None:
            return None
        decode_delivery(delivery, route.spec)
    except PoisonRecordError:
        return None
    return (route, delivery.event_type, envelope_of(delivery), delivery.replay_id)


PLACED = body("order.placed", "e-1", OrderPlaced("o-1", 3))
PLACED_HEADER = ("event_type", b"order.placed")


@settings(max_examples=400)
@given(RECORDS)
@example(Record(TOPIC, PLACED, (PLACED_HEADER,)))  # the common record, taken
@example(Record(TOPIC, body("order.noted", "e-1", OrderPlaced("o", 1)), (PLACED_HEADER,)))
@example(Record(TOPIC, body("order.placed", "e 1", OrderPlaced("o", 1)), (PLACED_HEADER,)))
@example(Record(TOPIC, body("order.placed", "é-1", OrderPlaced("o", 1)), (PLACED_HEADER,)))
@example(Record(TOPIC, body("order.placed", "e\x01", OrderPlaced("o", 1)), (PLACED_HEADER,)))
@example(Record(TOPIC, PLACED, (PLACED_HEADER, ("ce_specversion", b"1.0"))))
@example(Record(TOPIC, PLACED, (PLACED_HEADER, ("ce_type", b"order.noted"))))
@example(Record(TOPIC, PLACED, (PLACED_HEADER, ("replay_id", b"r-1"))))
@example(Record(TOPIC, PLACED, (PLACED_HEADER, ("event_type", b"order.noted"))))
@example(Record(TOPIC, PLACED, (PLACED_HEADER, ("x", NULL))))
@example(Record(TOPIC, PLACED, (PLACED_HEADER, ("x", NULL), ("y", b"v" * 400))))
@example(Record(TOPIC, PLACED, (("event_type", b"order.shipped"), PLACED_HEADER)))
@example(Record(TOPIC, PLACED, (("event_type", cast("bytes", bytearray(b"order.placed"))),)))
@example(Record(TOPIC, PLACED, (PLACED_HEADER, ("x", b"v" * 400))))  # header bytes
@example(Record(TOPIC, PLACED, (PLACED_HEADER,) * 7))  # header count
@example(Record(TOPIC, body("order.placed", "e-1", OrderPlaced("o" * 600, 1)), (PLACED_HEADER,)))
@example(Record(TOPIC, None, (PLACED_HEADER,)))  # a tombstone
@example(Record(TOPIC, body("order.noted", "e-1", "no object"), (("event_type", b"order.noted"),)))
@example(Record(TOPIC, PLACED[:-1] + b',"specversion":"1.0"}', (PLACED_HEADER,)))
def test_fast_path_routes_a_record_as_resolve_does_or_declines_it(record: Record) -> None:
    """A record the fast path takes ends with the route, type, envelope and payload that
    ``resolve`` and the decode step give it; everything else is left to ``resolve``."""
    routes = route_table()
    delivery = Delivery(record)
    route = routes.fast(delivery)
    if route is None:
        assert delivery.event is None  # left as it came
        assert not delivery.decoded
        return
    assert delivery.decoded
    # the envelope as the handler sees it: every field, the payload decoded to its type
    assert resolved_slowly(routes, record) == (
        route,
        delivery.event_type,
        envelope_of(delivery),
        None,
    )


def test_fast_path_takes_the_common_record() -> None:
    """The record eventkit's own publisher writes is taken, envelope and payload decoded."""
    routes = route_table()
    value = body("order.placed", "e-1", OrderPlaced("o-1", 3))
    headers = tuple(
        envelope_headers(msgspec.json.decode(value, type=EventEnvelope[OrderPlaced]), None)
    )
    delivery = Delivery(Record(TOPIC, value, headers))
    route = routes.fast(delivery)
    assert route is not None
    assert route.spec.event_type == "order.placed"
    assert delivery.payload == OrderPlaced("o-1", 3)


def test_fast_path_decodes_in_two_passes_where_the_route_has_no_one_pass_decoder() -> None:
    """A pydantic payload is read from ``data`` kept raw (which also keeps the raw bytes for
    the idempotency step's payload hash)."""
    routes = route_table()
    value = body("order.noted", "e-1", {"order_id": "o-1"})
    delivery = Delivery(Record(TOPIC, value, (("event_type", b"order.noted"),)))
    assert routes.fast(delivery) is not None
    assert delivery.payload == OrderNoted(order_id="o-1")
    assert delivery.event is not None
    assert isinstance(delivery.event.data, msgspec.Raw)


def test_fast_path_declines_a_delivery_resolved_before() -> None:
    """A delivery dispatched again (after a deferral) keeps what ``resolve`` decoded."""
    routes = route_table()
    value = body("order.placed", "e-1", OrderPlaced("o-1", 3))
    delivery = Delivery(Record(TOPIC, value, (("event_type", b"order.placed"),)))
    assert routes.resolve(delivery) is not None
    event = delivery.event
    assert routes.fast(delivery) is None
    assert delivery.event is event
