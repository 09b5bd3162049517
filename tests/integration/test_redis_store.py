"""``RedisIdempotencyStore`` on a real ``redis-server``: what the port's contract cannot see.

The state machine itself is pinned by the store contract suite (``tests/contract``); these
tests cover Redis only: scripts called by SHA and reloaded after NOSCRIPT, one round trip per
claimed chunk, outages (stopped, killed, paused) as ``StoreUnavailableError``, leases on the
server's clock, and keys that are ``storage_key`` shaped and expire. Each test has its own
server, since several of them stop or freeze it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from eventkit.embedded_redis import EmbeddedRedis
from eventkit.errors import LeaseLostError, StoreUnavailableError
from eventkit.idempotency import RedisIdempotencyStore, redis_scripts
from eventkit.idempotency.memory import DEFAULT_ATTEMPTS_TTL
from eventkit.keys import event_key, storage_key
from eventkit.outcomes import Outcome
from eventkit.ports import ClaimRequest, ClaimStatus

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

pytestmark = [pytest.mark.integration]

HASH = "0xabc"
LEASE = 10.0
TTL = 60.0
#: the client's socket timeout: how long a call may wait on a frozen server
SOCKET_TIMEOUT = 0.5


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A ``redis-server`` of this test's own."""
    with EmbeddedRedis(scratch=tmp_path / "redis") as running:
        yield running


def connect(server: EmbeddedRedis, **options: Any) -> redis.asyncio.Redis:
    """A client without retries, so an outage surfaces on the first failed call."""
    options.setdefault("socket_timeout", SOCKET_TIMEOUT)
    options.setdefault("socket_connect_timeout", SOCKET_TIMEOUT)
    options.setdefault("retry", Retry(NoBackoff(), 0))
    return redis.asyncio.Redis(host=server.host, port=server.port, **options)


@pytest.fixture
async def client(server: EmbeddedRedis) -> AsyncIterator[redis.asyncio.Redis]:
    """The store's client."""
    connection = connect(server)
    yield connection
    await connection.aclose()


@pytest.fixture
async def observer(server: EmbeddedRedis) -> AsyncIterator[redis.asyncio.Redis]:
    """A second client that inspects the server without going through the store."""
    connection = connect(server, decode_responses=True)
    yield connection
    await connection.aclose()


def key(identity: str) -> str:
    """An idempotency key as the dispatcher passes it to a store."""
    return event_key("eventkit:svc:group", "order.placed", identity)


def sha1(script: str) -> str:
    """The SHA a script is cached under by Redis."""
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


async def server_ms(observer: redis.asyncio.Redis) -> int:
    """The server's clock, in ms."""
    seconds, micros = await observer.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def claimed_token(store: RedisIdempotencyStore, name: str, lease: float = LEASE) -> str:
    """Claim one free key and return its token."""
    (answer,) = await store.claim([ClaimRequest(name)], lease)
    assert answer.status is ClaimStatus.CLAIMED
    assert answer.token is not None
    return answer.token


# --- scripts ----------------------------------------------------------------------------------


async def test_calls_work_again_after_script_flush(
    client: redis.asyncio.Redis, observer: redis.asyncio.Redis
) -> None:
    """After SCRIPT FLUSH before each call every call still answers: each loads its script
    again on NOSCRIPT (the last call's script is back in the server's cache, no other)."""
    store = RedisIdempotencyStore(client)
    token = await claimed_token(store, key("a"))
    await observer.script_flush()
    assert await store.start(key("a"), token) == 1
    await observer.script_flush()
    assert await store.renew(key("a"), token, LEASE)
    await observer.script_flush()
    assert await store.complete(key("a"), token, Outcome.HANDLED, HASH, TTL)
    await observer.script_flush()
    (answer,) = await store.claim([ClaimRequest(key("a"))], LEASE)
    assert answer.status is ClaimStatus.DUPLICATE
    await observer.script_flush()
    other = await claimed_token(store, key("b"))
    await observer.script_flush()
    assert await store.release(key("b"), other)
    shas = [sha1(text) for text in (redis_scripts.RELEASE, redis_scripts.SETTLE)]
    assert await observer.script_exists(*shas) == [True, False]


async def test_claim_of_a_chunk_is_one_round_trip(
    server: EmbeddedRedis, client: redis.asyncio.Redis, observer: redis.asyncio.Redis
) -> None:
    """Claiming 50 keys sends exactly one command to Redis, an EVALSHA naming all 50 keys,
    as MONITOR sees it (every client but the observer counted); the per-key work happens
    inside that script."""
    store = RedisIdempotencyStore(client)
    await store.claim([ClaimRequest(key("warm-up"))], LEASE)  # loads the script
    marker = "end-of-claim"
    requests = [ClaimRequest(key(f"chunk-{index}")) for index in range(50)]
    # the observer connects before the monitor starts, and its commands are left out
    observer_address = (await observer.client_info())["addr"]
    monitor_client = connect(server, decode_responses=True)
    try:
        async with monitor_client.monitor() as monitor:
            answers = await store.claim(requests, LEASE)
            await observer.echo(marker)
            commands = []
            while True:
                command = await asyncio.wait_for(monitor.next_command(), 5.0)
                if command["command"] == f"ECHO {marker}":
                    break
                commands.append(command)
    finally:
        await monitor_client.aclose()
    assert [answer.status for answer in answers] == [ClaimStatus.CLAIMED] * 50
    sent = [
        command["command"]
        for command in commands
        if command["client_type"] != "lua"
        and f"{command['client_address']}:{command['client_port']}" != observer_address
    ]
    assert len(sent) == 1
    assert sent[0].startswith("EVALSHA ")
    assert sent[0].split()[2] == "50"
    # the script did one read per key at least: the chunk's work ran server-side
    assert sum(command["client_type"] == "lua" for command in commands) >= 50


async def test_script_error_from_a_bug_is_not_swallowed(
    client: redis.asyncio.Redis, observer: redis.asyncio.Redis
) -> None:
    """A script failing on the data (a string where the key's hash should be) raises the
    Redis ResponseError itself, not StoreUnavailableError: a bug must not look like an
    outage and be retried forever."""
    store = RedisIdempotencyStore(client)
    await observer.set(storage_key(key("a")), "not a hash")
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE") as caught:
        await store.claim([ClaimRequest(key("a"))], LEASE)
    assert not isinstance(caught.value, StoreUnavailableError)


async def test_store_answers_the_same_with_a_decoding_client(server: EmbeddedRedis) -> None:
    """With ``decode_responses=True`` the store still answers outcomes and hashes as text."""
    decoding = connect(server, decode_responses=True)
    try:
        store = RedisIdempotencyStore(decoding)
        token = await claimed_token(store, key("a"))
        assert await store.complete(key("a"), token, Outcome.DEAD_LETTERED, HASH, TTL)
        (answer,) = await store.claim([ClaimRequest(key("a"))], LEASE)
        assert answer.status is ClaimStatus.DUPLICATE
        assert answer.outcome is Outcome.DEAD_LETTERED
        assert answer.payload_hash == HASH
    finally:
        await decoding.aclose()


async def test_expired_lease_of_a_started_key_no_longer_holds(
    client: redis.asyncio.Redis, observer: redis.asyncio.Redis
) -> None:
    """A started key outlives its lease in Redis (it keeps its attempts), yet the expired
    lease's token can no longer start, renew, complete or release it: the scripts check the
    deadline, not only the token. (The contract suite's expiry tests use keys never started,
    which Redis deletes at the lease's end, so they cannot see this.)"""
    store = RedisIdempotencyStore(client)
    lease = 0.2
    token = await claimed_token(store, key("a"), lease)
    assert await store.start(key("a"), token) == 1
    await asyncio.sleep(lease * 1.5)
    assert await observer.exists(storage_key(key("a")))
    with pytest.raises(LeaseLostError):
        await store.start(key("a"), token)
    assert not await store.renew(key("a"), token, LEASE)
    assert not await store.complete(key("a"), token, Outcome.HANDLED, HASH, TTL)
    assert not await store.release(key("a"), token)
    (answer,) = await store.claim([ClaimRequest(key("a"))], LEASE)
    assert answer.status is ClaimStatus.CLAIMED
    assert answer.attempts == 1


# --- outages ----------------------------------------------------------------------------------


async def every_call_is_unavailable(store: RedisIdempotencyStore, token: str) -> None:
    """Each of the five calls raises StoreUnavailableError with the Redis error chained."""
    calls = [
        store.claim([ClaimRequest(key("a"))], LEASE),
        store.start(key("a"), token),
        store.renew(key("a"), token, LEASE),
        store.complete(key("a"), token, Outcome.HANDLED, HASH, TTL),
        store.release(key("a"), token),
    ]
    for call in calls:
        with pytest.raises(StoreUnavailableError) as caught:
            await call
        assert isinstance(caught.value.__cause__, redis.exceptions.RedisError)


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_stopped_redis_is_unavailable_then_works_after_restart(
    server: EmbeddedRedis, client: redis.asyncio.Redis, how: str
) -> None:
    """With Redis stopped (SIGTERM) or killed (SIGKILL), every call raises
    StoreUnavailableError (cause chained); after a restart on the same port the store works
    again, on an empty server that has none of its scripts loaded."""
    store = RedisIdempotencyStore(client)
    token = await claimed_token(store, key("a"))
    server.stop() if how == "stop" else server.kill()
    await every_call_is_unavailable(store, token)
    server.start()
    # the restarted server is empty: the old lease is gone, so the token is too
    with pytest.raises(LeaseLostError):
        await store.start(key("a"), token)
    fresh = await claimed_token(store, key("a"))
    assert await store.start(key("a"), fresh) == 1
    assert await store.complete(key("a"), fresh, Outcome.HANDLED, HASH, TTL)


async def test_paused_redis_is_unavailable_within_the_socket_timeout(
    server: EmbeddedRedis, client: redis.asyncio.Redis
) -> None:
    """With Redis frozen (SIGSTOP), a call raises StoreUnavailableError (cause: the client's
    TimeoutError) within the socket timeout plus a margin, not later; after SIGCONT the
    store answers again."""
    store = RedisIdempotencyStore(client)
    token = await claimed_token(store, key("a"))
    server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError) as caught:
            await store.start(key("a"), token)
        elapsed = time.monotonic() - started
    finally:
        server.resume()
    assert isinstance(caught.value.__cause__, redis.exceptions.TimeoutError)
    assert SOCKET_TIMEOUT * 0.9 <= elapsed < SOCKET_TIMEOUT + 0.5
    assert await claimed_token(store, key("b"))


# --- time and memory --------------------------------------------------------------------------


async def test_lease_deadline_and_expiry_follow_the_server_clock(
    client: redis.asyncio.Redis, observer: redis.asyncio.Redis
) -> None:
    """A claim's stored deadline is the server's TIME plus the lease, the key's expiry is that
    deadline, and a BUSY answer's ``retry_after`` is the time left on it."""
    store = RedisIdempotencyStore(client)
    before = await server_ms(observer)
    await claimed_token(store, key("a"))
    after = await server_ms(observer)
    stored = storage_key(key("a"))
    raw_deadline = await observer.hget(stored, "ld")
    assert raw_deadline is not None
    deadline = int(raw_deadline)
    assert before + LEASE * 1000 <= deadline <= after + LEASE * 1000
    # the claim's prepaid start is remembered for the attempts TTL after the lease ends
    expires = int(await observer.execute_command("PEXPIRETIME", stored))
    assert expires == deadline + int(DEFAULT_ATTEMPTS_TTL * 1000)
    (busy,) = await store.claim([ClaimRequest(key("a"))], LEASE)
    now = await server_ms(observer)
    assert busy.status is ClaimStatus.BUSY
    assert abs(busy.retry_after * 1000 - (deadline - now)) < 50


async def test_stored_keys_are_storage_keys_with_an_expiry(
    client: redis.asyncio.Redis, observer: redis.asyncio.Redis
) -> None:
    """Redis holds ``storage_key(key)`` (namespace and hash, never the event id) and every key
    has an expiry: lease end plus the attempts TTL (the claim prepaid a start), the done TTL
    once completed; a key released before any start is deleted."""
    store = RedisIdempotencyStore(client, attempts_ttl_seconds=3600.0)
    long_id = "id-with-\x00-control-and-" + "x" * 5000
    names = {"started": key(long_id), "done": key("done"), "released": key("released")}
    answers = await store.claim([ClaimRequest(name) for name in names.values()], LEASE)
    tokens = dict(zip(names, [str(answer.token) for answer in answers], strict=True))
    stored = sorted(await observer.keys("*"))
    assert stored == sorted(storage_key(name) for name in names.values())
    assert all(len(name) == len("eventkit:svc:group:") + 32 for name in stored)
    ttls = [await observer.pttl(name) for name in stored]
    assert all((LEASE + 3590) * 1000 < ttl <= (LEASE + 3600) * 1000 for ttl in ttls)

    await store.start(names["started"], tokens["started"])
    assert await observer.pttl(storage_key(names["started"])) > (LEASE + 3590) * 1000
    await store.complete(names["done"], tokens["done"], Outcome.HANDLED, HASH, TTL)
    assert (TTL - 10) * 1000 < await observer.pttl(storage_key(names["done"])) <= TTL * 1000
    await store.release(names["released"], tokens["released"])
    assert not await observer.exists(storage_key(names["released"]))


async def test_redis_forgets_keys_when_the_memory_store_would(
    client: redis.asyncio.Redis, observer: redis.asyncio.Redis
) -> None:
    """With short durations the keys disappear from Redis on their own: a done key past its
    TTL, a released key's attempts past the attempts TTL, and a lease that expired on its
    unconfirmed prepaid start past the attempts TTL counted from the lease end."""
    store = RedisIdempotencyStore(client, attempts_ttl_seconds=0.6)
    lease = 0.3
    answers = await store.claim(
        [ClaimRequest(key(name)) for name in ("idle", "done", "rel")], lease
    )
    idle, done_token, released = (str(answer.token) for answer in answers)
    await store.start(key("done"), done_token)
    await store.complete(key("done"), done_token, Outcome.HANDLED, HASH, 0.3)
    await store.start(key("rel"), released)
    await store.release(key("rel"), released)
    assert len(await observer.keys("*")) == 3
    await asyncio.sleep(0.45)  # past the idle lease and the done TTL
    assert sorted(await observer.keys("*")) == sorted(storage_key(key(n)) for n in ("idle", "rel"))
    await asyncio.sleep(0.3)  # past the attempts TTL counted from the release
    assert await observer.keys("*") == [storage_key(key("idle"))]
    await asyncio.sleep(0.25)  # past the attempts TTL counted from the idle lease's end
    # KEYS skips expired keys that Redis has not reclaimed yet (DBSIZE would count them)
    assert await observer.keys("*") == []
    assert idle
