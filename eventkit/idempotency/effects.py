"""``RedisEffects``: the Redis writes an atomic-effect handler stages, applied with its DONE.

A handler registered with ``atomic_effects=True`` takes a ``RedisEffects`` parameter and
stages writes on it instead of writing to Redis itself. The idempotency step hands the
staged writes of the attempt that succeeded to the store, which applies them and marks the
key DONE in one atomic unit (one Lua script on Redis), token-checked: a lost lease applies
nothing. Writes staged by an attempt that failed are discarded with it.

The staged commands are a deliberately small, typed set, all writes (reads are not staged; a
handler that needs one uses its own client, and must not count on its own staged writes):

==========================  =================================================
``set(key, value, ttl=)``   ``SET key value [PX ms]`` (no ``ttl``: no expiry)
``delete(key)``             ``DEL key``
``incrby(key, amount)``     ``INCRBY key amount``
``expire(key, ttl)``        ``PEXPIRE key ms``
``hset(key, mapping)``      ``HSET key field value ...``
``hincrby(key, f, amount)`` ``HINCRBY key field amount``
``hdel(key, *fields)``      ``HDEL key field ...``
``sadd(key, *members)``     ``SADD key member ...``
``srem(key, *members)``     ``SREM key member ...``
``rpush(key, *values)``     ``RPUSH key value ...``
``lpush(key, *values)``     ``LPUSH key value ...``
==========================  =================================================

Counters (``incrby``, ``hincrby``) stay within +/- (2**53 - 1): a script's numbers are
doubles, and a value it cannot check exactly is refused rather than guessed.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, NamedTuple, Protocol

from eventkit.errors import ConfigurationError, NonRetryableError
from eventkit.keys import RESERVED_PREFIX

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from eventkit.delivery import Delivery

#: The Redis commands a ``RedisEffects`` may stage; the stores refuse any other.
ALLOWED_COMMANDS = frozenset(
    {"SET", "DEL", "INCRBY", "PEXPIRE", "HSET", "HINCRBY", "HDEL", "SADD", "SREM", "RPUSH", "LPUSH"}
)

#: The largest counter value and increment: exact in a Lua double.
MAX_SAFE_INTEGER = 2**53 - 1

#: At most this many writes per attempt, and this many arguments per write: a script's
#: arguments sit in memory twice and ``unpack`` is bounded by the Lua stack.
MAX_EFFECTS = 10_000
MAX_ARGS = 1_000

# Redis's own integer syntax (no sign but '-', no leading zeros), bounded to 17 characters
_INTEGER = re.compile(rb"-?[1-9][0-9]{0,15}|0")

Value = str | bytes | int


class Effect(NamedTuple):
    """One staged write: a command of ``ALLOWED_COMMANDS``, its key and its arguments."""

    command: str
    key: str
    args: tuple[bytes, ...] = ()


class EffectsRefusedError(NonRetryableError):
    """Staged writes that cannot be applied as a whole (a command not allowed, a key of
    another type, a counter that is no integer): nothing was applied, the record is
    dead-lettered and its key stays free."""


class RedisEffects:
    """The Redis writes of one handler attempt, staged in memory until the handler succeeds.

    Every method stages one write and returns at once; nothing reaches Redis before the
    handler returned. Once the attempt is over the object is sealed: staging more raises
    ``RuntimeError`` (a write from a task that outlived its handler would be lost).
    Raises ``ValueError`` for an argument Redis would refuse (an empty member list, a TTL
    that is not positive, a counter increment beyond ``MAX_SAFE_INTEGER``).
    """

    __slots__ = ("_effects", "_sealed")

    def __init__(self) -> None:
        self._effects: list[Effect] = []
        self._sealed = False

    def set(self, key: str, value: Value, *, ttl: float | None = None) -> None:
        """Stage ``SET key value``, with ``PX`` when ``ttl`` (seconds) is given."""
        if ttl is None:
            self._stage("SET", key, (_encode(value),))
        else:
            self._stage("SET", key, (_encode(value), b"PX", _milliseconds(ttl)))

    def delete(self, key: str) -> None:
        """Stage ``DEL key``."""
        self._stage("DEL", key, ())

    def incrby(self, key: str, amount: int = 1) -> None:
        """Stage ``INCRBY key amount``."""
        self._stage("INCRBY", key, (_integer(amount),))

    def expire(self, key: str, ttl: float) -> None:
        """Stage ``PEXPIRE key`` to ``ttl`` seconds from when the writes are applied."""
        self._stage("PEXPIRE", key, (_milliseconds(ttl),))

    def hset(self, key: str, mapping: Mapping[str, Value]) -> None:
        """Stage ``HSET key field value ...``."""
        args = tuple(
            part for field, value in mapping.items() for part in (_encode(field), _encode(value))
        )
        self._stage("HSET", key, args)

    def hincrby(self, key: str, field: str, amount: int = 1) -> None:
        """Stage ``HINCRBY key field amount``."""
        self._stage("HINCRBY", key, (_encode(field), _integer(amount)))

    def hdel(self, key: str, *fields: str) -> None:
        """Stage ``HDEL key field ...``."""
        self._stage("HDEL", key, tuple(_encode(field) for field in fields))

    def sadd(self, key: str, *members: Value) -> None:
        """Stage ``SADD key member ...``."""
        self._stage("SADD", key, tuple(_encode(member) for member in members))

    def srem(self, key: str, *members: Value) -> None:
        """Stage ``SREM key member ...``."""
        self._stage("SREM", key, tuple(_encode(member) for member in members))

    def rpush(self, key: str, *values: Value) -> None:
        """Stage ``RPUSH key value ...``."""
        self._stage("RPUSH", key, tuple(_encode(value) for value in values))

    def lpush(self, key: str, *values: Value) -> None:
        """Stage ``LPUSH key value ...``."""
        self._stage("LPUSH", key, tuple(_encode(value) for value in values))

    @property
    def staged(self) -> tuple[Effect, ...]:
        """The writes staged so far, in order."""
        return tuple(self._effects)

    def seal(self) -> tuple[Effect, ...]:
        """End staging and return the writes; later staging raises ``RuntimeError``."""
        self._sealed = True
        return tuple(self._effects)

    def __len__(self) -> int:
        return len(self._effects)

    def _stage(self, command: str, key: str, args: tuple[bytes, ...]) -> None:
        if self._sealed:
            raise RuntimeError("this attempt is over: its RedisEffects takes no more writes")
        if len(self._effects) >= MAX_EFFECTS:
            raise ValueError(f"an attempt stages at most {MAX_EFFECTS} writes")
        effect = Effect(command, key, args)
        check_effect(effect, ValueError)
        self._effects.append(effect)


class EffectsStager(Protocol):
    """Where a handler's ``RedisEffects`` come from: the idempotency step of its delivery."""

    def stage_effects(self, delivery: Delivery) -> RedisEffects:
        """A fresh ``RedisEffects`` for this attempt of ``delivery`` (earlier ones dropped)."""
        ...


def effects_for(delivery: Delivery) -> RedisEffects:
    """The ``RedisEffects`` argument of an atomic-effect handler's attempt.

    Raises ``ConfigurationError`` if the delivery is not under an idempotency lease (an app
    built without its idempotency step cannot apply staged writes).
    """
    stage = getattr(delivery.lease_keeper, "stage_effects", None)
    if stage is None:
        raise ConfigurationError("atomic effects need the handler's idempotency step")
    effects: RedisEffects = stage(delivery)
    return effects


def check_effects(effects: Sequence[Effect]) -> None:
    """Refuse, before any store call, writes that are not a well-formed allowed command.

    Raises ``EffectsRefusedError`` naming the first bad one.
    """
    if len(effects) > MAX_EFFECTS:
        raise EffectsRefusedError(f"at most {MAX_EFFECTS} writes per attempt, not {len(effects)}")
    for effect in effects:
        check_effect(effect, EffectsRefusedError)


def check_effect(effect: Effect, error: type[Exception]) -> None:
    """Raise ``error`` unless ``effect`` is an allowed command with arguments Redis takes."""
    command, key, args = effect
    if command not in ALLOWED_COMMANDS:
        raise error(f"{command!r} is not a command atomic effects may stage")
    if not isinstance(key, str) or not key:
        raise error(f"{command} needs a non-empty string key")
    if not _encodable(key):
        raise error(f"{command} key {key!r} is not valid UTF-8 text")
    if key.startswith(RESERVED_PREFIX):
        # idempotency keys live there: a staged write could undo another event's DONE
        raise error(f"{command} key {key!r} is in eventkit's reserved {RESERVED_PREFIX!r} space")
    if len(args) > MAX_ARGS:
        raise error(f"{command} takes at most {MAX_ARGS} arguments")
    if not _well_formed(command, args):
        raise error(f"{command} {key!r} has malformed arguments {args!r}")


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def parse_integer(value: bytes) -> int | None:
    """``value`` as Redis reads an integer, if it is one within ``MAX_SAFE_INTEGER``."""
    if _INTEGER.fullmatch(value) is None:
        return None
    number = int(value)
    return number if abs(number) <= MAX_SAFE_INTEGER else None


def _well_formed(command: str, args: tuple[bytes, ...]) -> bool:  # noqa: PLR0911
    count = len(args)
    if command == "DEL":
        return count == 0
    if command == "SET":
        return count == 1 or (count == 3 and args[1] == b"PX" and _positive(args[2]))  # noqa: PLR2004
    if command == "INCRBY":
        return count == 1 and parse_integer(args[0]) is not None
    if command == "PEXPIRE":
        return count == 1 and _positive(args[0])
    if command == "HSET":
        return count >= 2 and count % 2 == 0  # noqa: PLR2004
    if command == "HINCRBY":
        return count == 2 and parse_integer(args[1]) is not None  # noqa: PLR2004
    return count >= 1


def _positive(value: bytes) -> bool:
    number = parse_integer(value)
    return number is not None and number > 0


def _encode(value: Value) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    # bool is an int: True would be stored as "True", surely not what was meant
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode()
    raise TypeError(f"a staged value is str, bytes or int, not {type(value).__name__}")


def _integer(amount: int) -> bytes:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise TypeError(f"a counter increment is an int, not {type(amount).__name__}")
    if abs(amount) > MAX_SAFE_INTEGER:
        raise ValueError(f"a counter increment stays within +/-{MAX_SAFE_INTEGER}")
    return str(amount).encode()


def _milliseconds(seconds: float) -> bytes:
    if not seconds > 0:
        raise ValueError(f"a TTL must be positive, not {seconds}")
    # rounded up: a TTL never ends before the seconds asked for
    return str(math.ceil(seconds * 1000)).encode()


__all__ = [
    "ALLOWED_COMMANDS",
    "MAX_SAFE_INTEGER",
    "Effect",
    "EffectsRefusedError",
    "EffectsStager",
    "RedisEffects",
    "check_effects",
    "effects_for",
]
