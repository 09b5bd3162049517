"""Fixtures that run each contract suite against every adapter of a port."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import pytest

from eventkit.fakeclock import FakeClock
from eventkit.idempotency import InMemoryIdempotencyStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from eventkit.ports import IdempotencyStore


# --- idempotency store adapters ---------------------------------------------------------------


class StoreHarness(Protocol):
    """One idempotency store under test, with a way to let time pass for it.

    Tests express durations in multiples of ``lease`` and ``ttl`` so that an adapter on real
    time (Redis) can use short ones while the in-memory store uses realistic ones.
    """

    @property
    def store(self) -> IdempotencyStore: ...

    @property
    def lease(self) -> float:
        """A lease length, in seconds, to pass to ``claim`` and ``renew``."""
        ...

    @property
    def ttl(self) -> float:
        """A done-TTL, in seconds, to pass to ``complete``."""
        ...

    async def pass_time(self, seconds: float) -> None:
        """Return once at least ``seconds`` have passed on the store's clock."""
        ...


@dataclass(frozen=True, slots=True)
class MemoryStoreHarness:
    """The in-memory store on a fake clock: time passes instantly."""

    store: InMemoryIdempotencyStore
    clock: FakeClock
    lease: float = 30.0
    ttl: float = 600.0

    async def pass_time(self, seconds: float) -> None:
        self.clock.advance(seconds)


#: The idempotency store adapters every store contract test runs against.
STORE_ADAPTERS = ("memory",)


@pytest.fixture(params=STORE_ADAPTERS)
async def store_harness(request: pytest.FixtureRequest) -> AsyncIterator[StoreHarness]:
    """A fresh, empty idempotency store of each adapter."""
    adapter: str = request.param
    if adapter == "memory":
        clock = FakeClock()
        yield MemoryStoreHarness(store=InMemoryIdempotencyStore(clock), clock=clock)
        return
    raise AssertionError(f"no harness for store adapter {adapter!r}")
