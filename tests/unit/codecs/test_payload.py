"""``build_payload_decoder``: one prebuilt decoder per payload type, and its failure classes."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from eventkit.codecs import build_payload_decoder
from eventkit.errors import ConfigurationError, InvalidPayloadError, UndecodableRecordError
from tests.unit.payloads import OrderData, OrderModel, OrderStruct

DEPTH = 100_000
DEEP_ARRAY = b"[" * DEPTH + b"]" * DEPTH
DEEP_OBJECT = b'{"x":' * DEPTH + b"1" + b"}" * DEPTH
ORDER_JSON = b'{"order_id": "o-1", "total": 12.5}'


class PlainOrder:
    """A class that neither pydantic nor msgspec knows how to build."""

    def __init__(self, order_id: str, total: float) -> None:
        self.order_id = order_id
        self.total = total


TYPED_PAYLOADS: list[Any] = [OrderModel, OrderStruct, OrderData]
JSON_PAYLOADS: list[Any] = [*TYPED_PAYLOADS, dict[str, Any]]


def decode(payload_type: Any, raw: bytes) -> Any:
    """Build the decoder of ``payload_type`` and decode ``raw`` with it."""
    return build_payload_decoder(payload_type)(msgspec.Raw(raw))


def test_pydantic_model_payload_decodes_to_the_model() -> None:
    """A pydantic model is validated into an instance."""
    assert decode(OrderModel, ORDER_JSON) == OrderModel(order_id="o-1", total=12.5)


def test_msgspec_struct_payload_decodes_to_the_struct() -> None:
    """A msgspec Struct is decoded into an instance."""
    assert decode(OrderStruct, ORDER_JSON) == OrderStruct(order_id="o-1", total=12.5)


def test_dataclass_payload_decodes_to_the_dataclass() -> None:
    """A dataclass is decoded into an instance."""
    assert decode(OrderData, ORDER_JSON) == OrderData(order_id="o-1", total=12.5)


def test_dict_payload_decodes_to_a_dict() -> None:
    """``dict[str, Any]`` gives the JSON object as a dict."""
    assert decode(dict[str, Any], ORDER_JSON) == {"order_id": "o-1", "total": 12.5}


def test_bytes_payload_receives_the_raw_bytes_unchanged() -> None:
    """``bytes`` gets the raw payload as it is, even when it is not JSON."""
    raw = b"\x00\xffnot json"
    assert decode(bytes, raw) == raw
    assert decode(bytes, ORDER_JSON) == ORDER_JSON


def test_decoder_accepts_a_raw_slice_of_a_larger_document() -> None:
    """A ``Raw`` taken from a decoded envelope decodes like the bytes it holds."""

    class Envelope(msgspec.Struct):
        data: msgspec.Raw

    raw = msgspec.json.decode(b'{"data": ' + ORDER_JSON + b"}", type=Envelope).data
    assert build_payload_decoder(OrderModel)(raw) == OrderModel(order_id="o-1", total=12.5)
    assert build_payload_decoder(OrderStruct)(raw) == OrderStruct(order_id="o-1", total=12.5)


@pytest.mark.parametrize("payload_type", TYPED_PAYLOADS)
@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"order_id": "o-1"}', id="missing-field"),
        pytest.param(b'{"order_id": 5, "total": 12.5}', id="wrong-type"),
        pytest.param(b"[1, 2]", id="array"),
        pytest.param(b"null", id="null"),
    ],
)
def test_wrong_shape_is_an_invalid_payload(payload_type: Any, raw: bytes) -> None:
    """JSON of the wrong shape for the declared type is an ``InvalidPayloadError``."""
    with pytest.raises(InvalidPayloadError):
        decode(payload_type, raw)


def test_wrong_shape_for_a_dict_is_an_invalid_payload() -> None:
    """A JSON array where a dict is declared is an ``InvalidPayloadError``."""
    with pytest.raises(InvalidPayloadError):
        decode(dict[str, Any], b"[1, 2]")


@pytest.mark.parametrize("payload_type", JSON_PAYLOADS)
@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"{nope", id="malformed"),
        pytest.param(b'{"order_id": "o-1", "total": 12.5', id="truncated"),
        pytest.param(ORDER_JSON + b" x", id="trailing-garbage"),
        pytest.param(b'{"order_id": "o-\xff", "total": 12.5}', id="not-utf8"),
    ],
)
def test_bad_json_is_undecodable(payload_type: Any, raw: bytes) -> None:
    """A payload that is not JSON (or not UTF-8) is an ``UndecodableRecordError``."""
    with pytest.raises(UndecodableRecordError):
        decode(payload_type, raw)


@pytest.mark.parametrize("payload_type", JSON_PAYLOADS)
@pytest.mark.parametrize("deep", [DEEP_ARRAY, DEEP_OBJECT], ids=["array", "object"])
def test_deep_json_inside_the_payload_is_undecodable(payload_type: Any, deep: bytes) -> None:
    """100k-deep JSON in a member is an ``UndecodableRecordError``, never a RecursionError."""
    raw = b'{"order_id": "o-1", "total": 12.5, "extra": ' + deep + b"}"
    with pytest.raises(UndecodableRecordError):
        decode(payload_type, raw)


@pytest.mark.parametrize(
    ("payload_type", "deep"),
    [
        pytest.param(OrderModel, DEEP_ARRAY, id="pydantic-array"),
        pytest.param(OrderModel, DEEP_OBJECT, id="pydantic-object"),
        pytest.param(dict[str, Any], DEEP_OBJECT, id="dict-object"),
        pytest.param(list[Any], DEEP_ARRAY, id="list-array"),
        pytest.param(Any, DEEP_ARRAY, id="any-array"),
        pytest.param(Any, DEEP_OBJECT, id="any-object"),
    ],
)
def test_deep_json_at_top_level_is_undecodable(payload_type: Any, deep: bytes) -> None:
    """100k-deep JSON as the whole payload is undecodable for pydantic and msgspec decoders."""
    with pytest.raises(UndecodableRecordError):
        decode(payload_type, deep)


@pytest.mark.parametrize("payload_type", [PlainOrder, list[PlainOrder], dict[str, PlainOrder]])
def test_unsupported_payload_type_fails_when_the_decoder_is_built(payload_type: Any) -> None:
    """A type no decoder can build is a ``ConfigurationError`` at registration, not per record."""
    with pytest.raises(ConfigurationError, match="not supported"):
        build_payload_decoder(payload_type)


def test_unsupported_union_fails_when_the_decoder_is_built() -> None:
    """A union msgspec cannot decode is a ``ConfigurationError`` at registration."""
    with pytest.raises(ConfigurationError, match="not supported"):
        build_payload_decoder(OrderStruct | OrderData)
