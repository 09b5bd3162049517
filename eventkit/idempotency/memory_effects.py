"""``MemoryEffectsTarget``: the keys atomic effects write, for the in-memory store.

A dict-backed stand-in for the Redis keyspace the staged writes of ``RedisEffects`` reach,
with the same rules as the ``COMPLETE_WITH_EFFECTS`` script: the writes are checked first
(types and counters, simulated in order) and either all applied or none. Tests read it back
with ``get``, ``hgetall``, ``smembers``, ``lrange`` and ``ttl``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from eventkit.idempotency.effects import (
    MAX_SAFE_INTEGER,
    EffectsRefusedError,
    check_effects,
    parse_integer,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from eventkit.idempotency.effects import Effect
    from eventkit.ports import Clock

_Value = bytes | dict[bytes, bytes] | set[bytes] | list[bytes]

#: The type each command needs its key to have (or to be missing), as Redis's ``TYPE`` says.
_NEEDS = {
    "INCRBY": "string",
    "HSET": "hash",
    "HINCRBY": "hash",
    "HDEL": "hash",
    "SADD": "set",
    "SREM": "set",
    "RPUSH": "list",
    "LPUSH": "list",
}


@dataclass(slots=True)
class _Simulated:
    """What the check knows of one key part-way through the writes."""

    type: str
    #: the string value, once read or written (``None``: missing)
    value: bytes | None = None
    value_known: bool = False
    #: hash fields read or written so far (``None``: missing)
    fields: dict[bytes, bytes | None] = field(default_factory=dict)
    #: whether the key was overwritten or deleted, so nothing stored before is left
    cleared: bool = False


class MemoryEffectsTarget:
    """String, hash, set and list keys in memory, with expiry on the given clock."""

    __slots__ = ("_clock", "_data", "_expiry")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._data: dict[str, _Value] = {}
        self._expiry: dict[str, float] = {}

    def apply(self, effects: Sequence[Effect]) -> None:
        """Apply every write in order, or none: raises ``EffectsRefusedError`` first."""
        check_effects(effects)
        now = self._clock.monotonic()
        self._check(effects, now)
        for command, key, args in effects:
            self._apply(command, key, args, now)

    # --- reading, for tests ------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        value = self._live(key)
        if value is None:
            return None
        if not isinstance(value, bytes):
            raise TypeError(f"{key!r} holds a {_type_of(value)}, not a string")
        return value

    def hgetall(self, key: str) -> dict[bytes, bytes]:
        value = self._live(key)
        return dict(value) if isinstance(value, dict) else {}

    def smembers(self, key: str) -> set[bytes]:
        value = self._live(key)
        return set(value) if isinstance(value, set) else set()

    def lrange(self, key: str) -> list[bytes]:
        value = self._live(key)
        return list(value) if isinstance(value, list) else []

    def ttl(self, key: str) -> float | None:
        """Seconds left before ``key`` expires; ``None`` if it has no expiry or is missing."""
        if self._live(key) is None or key not in self._expiry:
            return None
        return self._expiry[key] - self._clock.monotonic()

    def keys(self) -> set[str]:
        return {key for key in list(self._data) if self._live(key) is not None}

    # --- the two phases ----------------------------------------------------------------------

    def _check(self, effects: Sequence[Effect], now: float) -> None:
        """Simulate the writes on what they touch; the same rules as the Lua script."""
        state: dict[str, _Simulated] = {}
        for command, key, args in effects:
            sim = state.get(key)
            if sim is None:
                sim = state[key] = _Simulated(_type_of(self._live(key, now)))
            needed = _NEEDS.get(command)
            if needed is not None and sim.type not in (needed, "none"):
                raise EffectsRefusedError(f"WRONGTYPE {command} on {key!r}, a {sim.type}")
            if command in ("SET", "DEL"):
                sim.type = "string" if command == "SET" else "none"
                sim.value, sim.value_known = (args[0] if command == "SET" else None), True
                sim.fields, sim.cleared = {}, True
            elif command == "INCRBY":
                sim.value = _added(self._sim_value(key, sim), args[0], command, key)
                sim.value_known, sim.type = True, "string"
            elif command == "HINCRBY":
                current = self._sim_field(key, sim, args[0])
                sim.fields[args[0]] = _added(current, args[1], command, key)
                sim.type = "hash"
            elif command == "HSET":
                for name, value in zip(args[::2], args[1::2], strict=True):
                    sim.fields[name] = value
                sim.type = "hash"
            elif command == "HDEL":
                # the type stays: a hash emptied here may be gone, and the check stays strict
                for name in args:
                    sim.fields[name] = None
            elif needed is not None and command not in ("SREM",):
                sim.type = needed

    def _sim_value(self, key: str, sim: _Simulated) -> bytes | None:
        if not sim.value_known:
            stored = self._data.get(key)
            sim.value = stored if isinstance(stored, bytes) else None
            sim.value_known = True
        return sim.value

    def _sim_field(self, key: str, sim: _Simulated, name: bytes) -> bytes | None:
        if name not in sim.fields:
            stored = None if sim.cleared else self._data.get(key)
            sim.fields[name] = stored.get(name) if isinstance(stored, dict) else None
        return sim.fields[name]

    def _apply(self, command: str, key: str, args: tuple[bytes, ...], now: float) -> None:  # noqa: PLR0912
        data = self._data
        self._live(key, now)
        if command == "SET":
            data[key] = args[0]
            self._expiry.pop(key, None)
            if len(args) == 3:  # noqa: PLR2004 - value, PX, ms
                self._expiry[key] = now + int(args[2]) / 1000
        elif command == "DEL":
            self._drop(key)
        elif command == "PEXPIRE":
            if key in data:
                self._expiry[key] = now + int(args[0]) / 1000
        elif command == "INCRBY":
            current = data.get(key, b"0")
            assert isinstance(current, bytes)
            data[key] = str(int(current) + int(args[0])).encode()
        elif command in ("HSET", "HINCRBY", "HDEL"):
            table = data.setdefault(key, {})
            assert isinstance(table, dict)
            if command == "HSET":
                table.update(zip(args[::2], args[1::2], strict=True))
            elif command == "HINCRBY":
                table[args[0]] = str(int(table.get(args[0], b"0")) + int(args[1])).encode()
            else:
                for name in args:
                    table.pop(name, None)
        elif command in ("SADD", "SREM"):
            members = data.setdefault(key, set())
            assert isinstance(members, set)
            if command == "SADD":
                members.update(args)
            else:
                members.difference_update(args)
        else:
            items = data.setdefault(key, [])
            assert isinstance(items, list)
            if command == "RPUSH":
                items.extend(args)
            else:
                items[:0] = reversed(args)
        value = data.get(key)
        if value is not None and not isinstance(value, bytes) and not value:
            # Redis deletes a hash, set or list when its last element goes
            self._drop(key)

    def _live(self, key: str, now: float | None = None) -> _Value | None:
        """The value of ``key``, dropping it first if it has expired."""
        deadline = self._expiry.get(key)
        if deadline is not None:
            if now is None:
                now = self._clock.monotonic()
            if now >= deadline:
                self._drop(key)
        return self._data.get(key)

    def _drop(self, key: str) -> None:
        self._data.pop(key, None)
        self._expiry.pop(key, None)


def _type_of(value: _Value | None) -> str:
    if value is None:
        return "none"
    if isinstance(value, bytes):
        return "string"
    if isinstance(value, dict):
        return "hash"
    return "set" if isinstance(value, set) else "list"


def _added(current: bytes | None, amount: bytes, command: str, key: str) -> bytes:
    """``current + amount`` as Redis's counters add, or ``EffectsRefusedError``."""
    base = 0 if current is None else parse_integer(current)
    step = parse_integer(amount)
    if base is None or step is None:
        raise EffectsRefusedError(f"{command} on {key!r}: the value is not an integer")
    result = base + step
    if abs(result) > MAX_SAFE_INTEGER:
        raise EffectsRefusedError(f"{command} on {key!r} would leave +/-{MAX_SAFE_INTEGER}")
    return str(result).encode()


__all__ = ["MemoryEffectsTarget"]
