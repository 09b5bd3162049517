"""Handler signatures, inspected once at registration: which parameter receives what."""

from __future__ import annotations

import enum
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, get_args, get_origin, get_type_hints

from eventkit.context import EventContext
from eventkit.envelope import EventEnvelope
from eventkit.errors import ConfigurationError
from eventkit.idempotency.effects import RedisEffects

HandlerFunc = Callable[..., Awaitable[Any]]


class ParamKind(enum.Enum):
    """What the dispatcher passes to one handler parameter."""

    PAYLOAD = "payload"
    ENVELOPE = "envelope"
    CONTEXT = "context"
    #: the ``RedisEffects`` of an atomic-effect handler's attempt
    EFFECTS = "effects"


@dataclass(frozen=True, slots=True)
class HandlerParam:
    """One parameter of a handler and what it receives."""

    name: str
    kind: ParamKind
    keyword_only: bool


@dataclass(frozen=True, slots=True)
class HandlerSignature:
    """The parameters of a handler and the payload type its decoder is built for."""

    params: tuple[HandlerParam, ...]
    payload_type: Any

    @property
    def wants_context(self) -> bool:
        return any(param.kind is ParamKind.CONTEXT for param in self.params)

    @property
    def wants_effects(self) -> bool:
        return any(param.kind is ParamKind.EFFECTS for param in self.params)


def inspect_handler(func: HandlerFunc) -> HandlerSignature:
    """Read a handler's parameters; anything the dispatcher cannot fill is a ``ConfigurationError``.

    A parameter typed ``EventContext`` receives the context, one typed ``RedisEffects`` the
    attempt's staged writes (atomic-effect handlers only), one typed ``EventEnvelope[T]``
    the whole envelope (with ``data`` of type ``T``), and at most one other parameter the
    payload, decoded to its annotation.
    """
    name = getattr(func, "__qualname__", repr(func))
    if not inspect.iscoroutinefunction(func):
        raise ConfigurationError(f"handler {name} must be an async function")
    try:
        hints = get_type_hints(func, include_extras=True)
    except (NameError, TypeError) as exc:
        raise ConfigurationError(
            f"cannot resolve the annotations of handler {name}: {exc}"
        ) from exc
    params: list[HandlerParam] = []
    payload_type: Any = None
    payload_param: str | None = None
    for param in inspect.signature(func).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ConfigurationError(f"handler {name} may not take *args or **kwargs")
        if param.name not in hints:
            raise ConfigurationError(f"parameter {param.name!r} of handler {name} needs a type")
        annotation = hints[param.name]
        keyword_only = param.kind is param.KEYWORD_ONLY
        if annotation is EventContext:
            params.append(HandlerParam(param.name, ParamKind.CONTEXT, keyword_only))
            continue
        if annotation is RedisEffects:
            params.append(HandlerParam(param.name, ParamKind.EFFECTS, keyword_only))
            continue
        if annotation is EventEnvelope or get_origin(annotation) is EventEnvelope:
            kind = ParamKind.ENVELOPE
            args = get_args(annotation)
            annotation = args[0] if args else dict[str, Any]
        else:
            kind = ParamKind.PAYLOAD
        if payload_param is not None:
            raise ConfigurationError(
                f"handler {name} has two payload parameters, {payload_param!r} and "
                f"{param.name!r}; a handler receives one payload (or one EventEnvelope[T])"
            )
        payload_param = param.name
        payload_type = annotation
        params.append(HandlerParam(param.name, kind, keyword_only))
    return HandlerSignature(tuple(params), payload_type)
