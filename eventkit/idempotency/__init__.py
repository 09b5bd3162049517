"""Idempotency stores: adapters of the ``IdempotencyStore`` port (R4)."""

from __future__ import annotations

from eventkit.idempotency.memory import InMemoryIdempotencyStore

__all__ = ["InMemoryIdempotencyStore"]
