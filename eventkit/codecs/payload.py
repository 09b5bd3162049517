"""Payload decoders, built once per handler from the payload type it declares."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pydantic

from eventkit.codecs.wire import TypedWireEvent, WireEvent
from eventkit.errors import ConfigurationError, InvalidPayloadError, UndecodableRecordError

PayloadDecoder = Callable[[msgspec.Raw], Any]
#: Decodes a whole eventkit envelope with its payload in one pass (see ``TypedWireEvent``).
EnvelopeDecoder = Callable[[bytes], WireEvent]


def build_payload_decoder(payload_type: Any) -> PayloadDecoder:
    """Build the decoder of one payload type; unsupported types fail at registration.

    pydantic models validate with pydantic's own JSON parser; msgspec Structs, dataclasses,
    dicts and anything else msgspec understands use a prebuilt ``msgspec.json.Decoder``;
    ``bytes`` receives the raw payload (for binary CloudEvents). Decoding failures raise
    ``InvalidPayloadError`` (wrong shape) or ``UndecodableRecordError`` (not JSON, too deep).
    """
    if payload_type is bytes:
        return _raw_bytes
    if isinstance(payload_type, type) and issubclass(payload_type, pydantic.BaseModel):
        return _pydantic_decoder(payload_type)
    return _msgspec_decoder(payload_type)


def build_envelope_decoder(payload_type: Any) -> EnvelopeDecoder | None:
    """A one-pass decoder of envelope and payload, for types msgspec decodes natively.

    ``None`` for pydantic models (pydantic parses its own JSON) and ``bytes``; call only with
    a type ``build_payload_decoder`` accepted.
    """
    if payload_type is bytes:
        return None
    if isinstance(payload_type, type) and issubclass(payload_type, pydantic.BaseModel):
        return None
    decoder: msgspec.json.Decoder[WireEvent] = msgspec.json.Decoder(TypedWireEvent[payload_type])
    return decoder.decode


def _raw_bytes(raw: msgspec.Raw) -> bytes:
    return bytes(raw)


def _pydantic_decoder(model: type[pydantic.BaseModel]) -> PayloadDecoder:
    validate_json = model.__pydantic_validator__.validate_json

    def decode(raw: msgspec.Raw) -> Any:
        try:
            return validate_json(bytes(raw))
        except pydantic.ValidationError as exc:
            # pydantic reports bad JSON as a validation error of type json_invalid
            if any(error["type"] == "json_invalid" for error in exc.errors()):
                raise UndecodableRecordError(f"undecodable payload: {exc}") from None
            raise InvalidPayloadError(f"invalid payload for {model.__name__}: {exc}") from None
        except RecursionError:
            raise UndecodableRecordError("undecodable payload: JSON nested too deep") from None
        except Exception as exc:
            # a validator of the model raising something other than ValueError
            raise InvalidPayloadError(
                f"invalid payload for {model.__name__}: {type(exc).__name__}: {exc}"
            ) from None

    return decode


def _unsupported(payload_type: Any, reason: str) -> ConfigurationError:
    return ConfigurationError(
        f"payload type {payload_type!r} is not supported: use a pydantic model, a msgspec "
        f"Struct, a dataclass, a dict or bytes ({reason})"
    )


def _custom_types(info: msgspec.inspect.Type, seen: set[int]) -> list[type]:
    """Types msgspec would only accept through a decode hook, which eventkit does not set."""
    if id(info) in seen:
        return []
    seen.add(id(info))
    if isinstance(info, msgspec.inspect.CustomType):
        return [info.cls]
    found: list[type] = []
    for child in _children(info):
        found.extend(_custom_types(child, seen))
    return found


def _children(info: msgspec.inspect.Type) -> list[msgspec.inspect.Type]:
    children: list[msgspec.inspect.Type] = []
    for name in ("item_type", "key_type", "value_type", "types", "fields"):
        value = getattr(info, name, None)
        if isinstance(value, msgspec.inspect.Type):
            children.append(value)
        elif isinstance(value, tuple):
            for item in value:
                if isinstance(item, msgspec.inspect.Type):
                    children.append(item)
                elif isinstance(item, msgspec.inspect.Field):
                    children.append(item.type)
    return children


def _msgspec_decoder(payload_type: Any) -> PayloadDecoder:
    try:
        decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(payload_type)
        custom = _custom_types(msgspec.inspect.type_info(payload_type), set())
    except TypeError as exc:
        raise _unsupported(payload_type, str(exc)) from None
    if custom:
        names = ", ".join(sorted({cls.__qualname__ for cls in custom}))
        raise _unsupported(payload_type, f"msgspec cannot decode {names}")
    name = getattr(payload_type, "__name__", repr(payload_type))

    def decode(raw: msgspec.Raw) -> Any:
        try:
            return decoder.decode(raw)
        except msgspec.ValidationError as exc:
            raise InvalidPayloadError(f"invalid payload for {name}: {exc}") from None
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            # msgspec raises UnicodeDecodeError, not DecodeError, for bad UTF-8 in a string
            raise UndecodableRecordError(f"undecodable payload: {exc}") from None
        except RecursionError:
            # msgspec raises RecursionError, not DecodeError, on very deep input
            raise UndecodableRecordError("undecodable payload: JSON nested too deep") from None
        except Exception as exc:
            # a __post_init__ of the payload type raising something msgspec does not wrap
            raise InvalidPayloadError(
                f"invalid payload for {name}: {type(exc).__name__}: {exc}"
            ) from None

    return decode
