"""``open_redis_store``: connect to Redis, run the R1 start-up checks, hand back the store.

The checks fail fast, before anything is consumed, with a ``ConfigurationError`` that says
what to change (the worker then exits 2):

- the server answers ``PING`` (else: the address and the cause);
- it is Redis >= 7 (``INFO server``): the scripts rely on Redis 7 replicating script effects;
- it is not a Redis Cluster node (``INFO cluster``): a chunk's claim is one multi-key script;
- its ``maxmemory_policy`` (``INFO memory``, since managed Redis often disables ``CONFIG``) is
  ``noeviction``: every other policy may evict idempotency keys, and an evicted DONE key lets
  a handled event run again. ``RedisSettings.allow_eviction`` downgrades this to a warning;
- it accepts the store's scripts (``SCRIPT LOAD``), so a script error shows at start-up.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from eventkit.errors import ConfigurationError, StoreUnavailableError
from eventkit.idempotency import redis_scripts
from eventkit.idempotency.redis_store import UNAVAILABLE_ERRORS, RedisIdempotencyStore
from eventkit.keys import event_key, payload_hash, storage_key
from eventkit.outcomes import Outcome
from eventkit.ports import ClaimRequest, ClaimStatus

if TYPE_CHECKING:
    from collections.abc import Mapping

    from redis.asyncio import Redis

    from eventkit.idempotency.redis_settings import RedisSettings

logger = logging.getLogger("eventkit.idempotency")

MIN_REDIS_MAJOR = 7
NO_EVICTION = "noeviction"
#: every script the store may call, loaded at start-up (the store reloads any lost later)
SCRIPTS: tuple[str, ...] = tuple(getattr(redis_scripts, name) for name in redis_scripts.__all__)
_PROBE_EVENT_TYPE = "eventkit.sizing-probe"
_PROBE_SECONDS = 60.0
_KIB = 1024


class RedisConnection:
    """An open, checked Redis client and the ``RedisIdempotencyStore`` over it.

    ``store`` is the store to give the dispatcher; ``memory_used()`` reads the server's
    memory use (for alerting and metrics); ``close()`` closes the client's connections.
    """

    __slots__ = ("_client", "_closed", "settings", "store")

    def __init__(self, client: Redis, settings: RedisSettings) -> None:
        self._client = client
        self._closed = False
        self.settings = settings
        self.store = RedisIdempotencyStore(
            client, attempts_ttl_seconds=settings.attempts_ttl_seconds
        )

    async def memory_used(self) -> int:
        """``used_memory`` from ``INFO memory``, in bytes.

        Raises ``StoreUnavailableError`` when Redis does not answer.
        """
        try:
            info = await self._client.info("memory")
        except UNAVAILABLE_ERRORS as error:
            raise StoreUnavailableError(f"Redis is unavailable: {error}") from error
        return int(info["used_memory"])

    async def key_bytes(self, namespace: str) -> int | None:
        """Bytes one DONE key takes on this server, measured, or ``None`` if Redis won't say.

        The store's own scripts claim, start and complete a probe key in ``namespace`` (so
        it has exactly the fields and key length real keys have), ``MEMORY USAGE`` measures
        it, and it is deleted. The expiry entry Redis keeps per key is not included.
        """
        key = event_key(namespace, _PROBE_EVENT_TYPE, uuid.uuid4().hex)
        stored = storage_key(key)
        [claim] = await self.store.claim([ClaimRequest(key)], _PROBE_SECONDS)
        if claim.status is not ClaimStatus.CLAIMED or claim.token is None:
            return None  # a fresh random key is always claimed; never guess a size
        try:
            await self.store.start(key, claim.token)
            # a typical payload hash: CRC-32 in hex, as the dispatcher records it
            digest = payload_hash(b"eventkit sizing probe")
            await self.store.complete(key, claim.token, Outcome.HANDLED, digest, _PROBE_SECONDS)
            usage = await self._client.memory_usage(stored, samples=0)
        finally:
            await self._client.delete(stored)
        return None if usage is None else int(usage)

    async def close(self) -> None:
        """Close the client's connections; calling it again does nothing."""
        if self._closed:
            return
        await self._client.aclose()
        # only once it is done: a close cancelled halfway is finished by the next call
        self._closed = True


async def open_redis_store(settings: RedisSettings) -> RedisConnection:
    """Connect to the Redis ``settings`` name, check it (see the module docstring), return it.

    Raises ``ConfigurationError`` naming the address and what is wrong; the client is
    closed then.
    """
    client = settings.client()
    try:
        await _check(client, settings)
    except BaseException:
        await client.aclose()
        raise
    return RedisConnection(client, settings)


async def _check(client: Redis, settings: RedisSettings) -> None:
    address = settings.address
    try:
        await client.ping()
    except RedisError as error:
        raise ConfigurationError(f"cannot connect to Redis at {address}: {error}") from error
    try:
        server = await client.info("server")
        cluster = await client.info("cluster")
        memory = await client.info("memory")
    except RedisError as error:
        raise ConfigurationError(
            f"cannot read INFO server, cluster and memory from Redis at {address}: {error}"
        ) from error
    check_version(address, str(server.get("redis_version", "")))
    check_not_cluster(address, cluster.get("cluster_enabled", 0))
    policy = str(memory.get("maxmemory_policy", ""))
    check_eviction_policy(address, policy, allow_eviction=settings.allow_eviction)
    try:
        for text in SCRIPTS:
            await client.script_load(text)
    except RedisError as error:
        raise ConfigurationError(
            f"Redis at {address} refused the idempotency store's scripts: {error}"
        ) from error
    logger.info(
        "idempotency store: Redis %s at %s, database %d, maxmemory_policy %s",
        server.get("redis_version"),
        address,
        settings.db,
        policy,
    )


def check_version(address: str, version: str) -> None:
    """Refuse a server older than Redis 7 (``redis_version`` of ``INFO server``)."""
    major = version.partition(".")[0]
    if not major.isdigit():
        raise ConfigurationError(f"cannot tell the version of Redis at {address}: {version!r}")
    if int(major) < MIN_REDIS_MAJOR:
        raise ConfigurationError(
            f"Redis at {address} is version {version}; the idempotency store needs Redis "
            f">= {MIN_REDIS_MAJOR} (its scripts rely on script effects replication)"
        )


def check_not_cluster(address: str, cluster_enabled: object) -> None:
    """Refuse a Redis Cluster node (``cluster_enabled`` of ``INFO cluster``)."""
    if str(cluster_enabled) != "0":
        raise ConfigurationError(
            f"Redis at {address} is a Redis Cluster node; the idempotency store does not "
            "support Redis Cluster yet (a chunk's claim is one multi-key script): use a "
            "single node or a Sentinel-managed primary"
        )


def check_eviction_policy(address: str, policy: str, *, allow_eviction: bool) -> None:
    """Refuse a ``maxmemory_policy`` other than ``noeviction``, or warn if it is allowed."""
    if policy == NO_EVICTION:
        return
    risk = (
        f"Redis at {address} has maxmemory_policy {policy!r}: it may evict idempotency keys, "
        "and an evicted key lets an event that was already handled run again"
    )
    if not allow_eviction:
        raise ConfigurationError(
            f"{risk}. Set maxmemory-policy {NO_EVICTION} on the server, or accept the risk "
            "with allow_eviction=true (RedisSettings.allow_eviction)"
        )
    logger.warning("%s (allowed by allow_eviction=true)", risk)


async def log_startup(
    connection: RedisConnection,
    *,
    namespace: str,
    lease_seconds: float,
    done_ttls: Mapping[str, float],
) -> None:
    """Log (INFO) the lease, each event type's done-TTL and a sizing estimate.

    Sizing: keys ~ events per second * done-TTL; memory ~ keys * bytes per key, where
    bytes per key is measured on this server (``RedisConnection.key_bytes``). The estimate
    is given per event per second of each type; multiply by the expected rates and add up.
    """
    try:
        key_bytes = await connection.key_bytes(namespace)
    except (StoreUnavailableError, RedisError) as error:
        logger.warning("idempotency sizing: could not measure bytes per key: %s", error)
        key_bytes = None
    logger.info("idempotency lease: %s s, renewed while a handler runs", _number(lease_seconds))
    for event_type, ttl in sorted(done_ttls.items()):
        if key_bytes is None:
            logger.info("idempotency done-TTL of %s: %s s", event_type, _number(ttl))
            continue
        logger.info(
            "idempotency done-TTL of %s: %s s; per event/s sustained: about %d keys, %s",
            event_type,
            _number(ttl),
            round(ttl),
            _size(ttl * key_bytes),
        )
    if key_bytes is not None:
        logger.info(
            "idempotency sizing: keys ~ events/s * done-TTL, memory ~ keys * %d bytes per "
            "key (measured with MEMORY USAGE)",
            key_bytes,
        )


def _number(seconds: float) -> str:
    return f"{seconds:g}"


def _size(size: float) -> str:
    for unit in ("bytes", "KiB", "MiB"):
        if size < _KIB:
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= _KIB
    return f"{size:.1f} GiB"


__all__ = [
    "RedisConnection",
    "check_eviction_policy",
    "check_not_cluster",
    "check_version",
    "log_startup",
    "open_redis_store",
]
