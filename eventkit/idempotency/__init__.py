"""Idempotency stores: adapters of the ``IdempotencyStore`` port (R4)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from eventkit.idempotency.memory import InMemoryIdempotencyStore
from eventkit.idempotency.redis_settings import RedisSettings

if TYPE_CHECKING:
    from eventkit.idempotency.redis_store import RedisIdempotencyStore


def __getattr__(name: str) -> object:
    # imported on first use: redis is loaded only by processes that use the Redis store
    if name == "RedisIdempotencyStore":
        from eventkit.idempotency.redis_store import RedisIdempotencyStore  # noqa: PLC0415

        return RedisIdempotencyStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["InMemoryIdempotencyStore", "RedisIdempotencyStore", "RedisSettings"]
