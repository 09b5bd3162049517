"""Fixtures that run each contract suite against every adapter of a port."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import pytest
import redis.asyncio

from eventkit.embedded_redis import EmbeddedRedis
from eventkit.fakeclock import FakeClock
from eventkit.idempotency import InMemoryIdempotencyStore, RedisIdempotencyStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from eventkit.ports import IdempotencyStore


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A ``redis-server`` of the session's own, started on first use (never the one on 6379).

    A missing binary raises with how to install it: a failure, never a skip.
    """
    with EmbeddedRedis(scratch=tmp_path_factory.mktemp("redis")) as server:
        yield server


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


@dataclass(frozen=True, slots=True)
class RedisStoreHarness:
    """The Redis store on a real server: leases run on its clock, so they are short and
    time passes by sleeping."""

    store: RedisIdempotencyStore
    lease: float = 0.4
    ttl: float = 1.5

    async def pass_time(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


#: The idempotency store adapters every store contract test runs against.
STORE_ADAPTERS = ("memory", "redis")


@pytest.fixture(params=STORE_ADAPTERS)
async def store_harness(request: pytest.FixtureRequest) -> AsyncIterator[StoreHarness]:
    """A fresh, empty idempotency store of each adapter."""
    adapter: str = request.param
    if adapter == "memory":
        clock = FakeClock()
        yield MemoryStoreHarness(store=InMemoryIdempotencyStore(clock), clock=clock)
        return
    if adapter == "redis":
        server: EmbeddedRedis = request.getfixturevalue("redis_server")
        # a client per test: its connections belong to the test's event loop
        client = redis.asyncio.Redis(host=server.host, port=server.port, socket_timeout=5.0)
        # one server for the session, an empty database for each test
        await client.flushdb()
        try:
            yield RedisStoreHarness(store=RedisIdempotencyStore(client))
        finally:
            await client.aclose()
        return
    raise AssertionError(f"no harness for store adapter {adapter!r}")
