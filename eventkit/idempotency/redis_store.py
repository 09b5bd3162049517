"""``RedisIdempotencyStore``: the R4 lease state machine in Redis, one Lua script per call.

It answers exactly as ``InMemoryIdempotencyStore`` does (the same contract suite runs on
both); the scripts and the key layout are described in ``redis_scripts``. Leases run on the
Redis server's clock, keys are ``storage_key(key)`` and expire when the in-memory store would
drop them.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import TYPE_CHECKING, Any

from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    ConnectionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TimeoutError,
    TryAgainError,
)

from eventkit.errors import ConfigurationError, LeaseLostError, StoreUnavailableError
from eventkit.idempotency import redis_scripts
from eventkit.idempotency.effects import EffectsRefusedError, check_effects
from eventkit.idempotency.memory import DEFAULT_ATTEMPTS_TTL, DONE_OUTCOMES
from eventkit.keys import storage_key
from eventkit.outcomes import Outcome
from eventkit.ports import Claim, ClaimRequest, ClaimStatus, Settled

if TYPE_CHECKING:
    from collections.abc import Sequence

    from redis.asyncio import Redis

    from eventkit.idempotency.effects import Effect
    from eventkit.ports import Completion

#: Redis errors that mean "not reachable or not answering now", never a bug in a script.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    ConnectionError,  # refused, reset, closed; includes authentication and max clients
    TimeoutError,  # the client's socket timeout: a stalled or paused server
    BusyLoadingError,  # a restarted server still loading its data set
    ReadOnlyError,  # a replica after a failover, until the client follows the new primary
    OutOfMemoryError,  # maxmemory reached under noeviction: writes refused until it drains
    TryAgainError,
    ClusterDownError,
)

_CLAIMED = 1
_BUSY = 2
_DUPLICATE = 3


class _Script:
    """One Lua script, called by SHA and loaded again whenever the server lost it."""

    __slots__ = ("sha", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    async def __call__(
        self, client: Redis, keys: Sequence[str], args: Sequence[str | int | bytes]
    ) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            # a restart, failover or SCRIPT FLUSH emptied the cache: nothing ran, so call again
            await client.script_load(self.text)
            return await client.evalsha(self.sha, len(keys), *keys, *args)


_SETTLE = _Script(redis_scripts.SETTLE)
_START = _Script(redis_scripts.START)
_RENEW = _Script(redis_scripts.RENEW)
_COMPLETE = _Script(redis_scripts.COMPLETE)
_RELEASE = _Script(redis_scripts.RELEASE)
_COMPLETE_WITH_EFFECTS = _Script(redis_scripts.COMPLETE_WITH_EFFECTS)


class RedisIdempotencyStore:
    """The ``IdempotencyStore`` port on a single Redis node (or Sentinel primary), Redis >= 7.

    - ``claim`` of a whole chunk is one script call (``EVALSHA``), so one round trip; the
      answers are those of ``InMemoryIdempotencyStore``, rule for rule. ``settle`` writes
      DONE marks in that same call.
    - ``start``, ``renew``, ``complete`` and ``release`` are one script call each, token-checked
      inside the script.
    - Every connection or timeout error of the client (and a server that is loading, read-only
      or out of memory) raises ``StoreUnavailableError`` with the cause chained; any other
      Redis error is a bug and propagates.

    ``client`` is a ``redis.asyncio.Redis``; its socket timeout and retry settings bound how
    long a call waits on a stalled server. Free keys keep their attempts for
    ``attempts_ttl_seconds`` after their last lease ended.

    ``complete_with_effects`` (atomic-effect mode) applies staged writes with the DONE mark
    in one script; it needs every key in one node, so ``supports_effects`` is ``False`` on
    Redis Cluster (pass ``supports_effects=False``, or set the attribute once the connection
    code found a cluster) and atomic-effect handlers are then refused at start-up.
    """

    __slots__ = ("_attempts_ttl_ms", "_client", "supports_effects")

    def __init__(
        self,
        client: Redis,
        *,
        attempts_ttl_seconds: float = DEFAULT_ATTEMPTS_TTL,
        supports_effects: bool = True,
    ) -> None:
        if attempts_ttl_seconds <= 0:
            raise ValueError("attempts_ttl_seconds must be positive")
        self._client = client
        self._attempts_ttl_ms = _milliseconds(attempts_ttl_seconds)
        #: whether atomic-effect handlers may run on this store: a single node or Sentinel
        self.supports_effects = supports_effects

    @property
    def client(self) -> Redis:
        """The Redis client the store calls (tests read effects back through it)."""
        return self._client

    async def claim(self, requests: Sequence[ClaimRequest], lease_seconds: float) -> list[Claim]:
        """Claim every key in one script call; answers are in request order.

        Raises ``ValueError`` for a lease that is not positive.
        """
        if not requests:
            _check_positive("lease_seconds", lease_seconds)
            return []
        return (await self.settle((), requests, lease_seconds)).claims

    async def settle(
        self,
        completions: Sequence[Completion],
        requests: Sequence[ClaimRequest],
        lease_seconds: float,
    ) -> Settled:
        """Write DONE marks, then claim keys, in one script call.

        Raises ``ValueError`` (writing nothing) for a mark ``complete`` would refuse, or a
        lease that is not positive.
        """
        _check_positive("lease_seconds", lease_seconds)
        if not completions and not requests:
            return Settled([], [])
        # one random secret per call, the index per key: tokens stay unguessable and unique
        secret = secrets.token_hex(12)
        keys = [storage_key(mark.key) for mark in completions]
        keys.extend(storage_key(request.key) for request in requests)
        # the marks travel as one argument: the client spends more per argument than Redis
        words: list[str] = []
        for mark in completions:
            _check_mark(mark.outcome, mark.ttl_seconds)
            if " " in mark.payload_hash:
                raise ValueError(f"a payload hash has no spaces, not {mark.payload_hash!r}")
            # a token with a space is none this store issued: the script finds it lost
            token = mark.token if " " not in mark.token else "-"
            ttl = _milliseconds(mark.ttl_seconds)
            words.append(f"{token} {mark.outcome.value} {mark.payload_hash} {ttl} ")
        replays = [r.replay_id for r in requests if r.replay_id is not None]
        kinds = (
            "-" * len(requests)
            if not replays
            else "".join("-" if r.replay_id is None else "+" for r in requests)
        )
        args: list[str | int] = [
            _milliseconds(lease_seconds),
            self._attempts_ttl_ms,
            secret,
            len(completions),
            "".join(words),
            kinds,
            *replays,
        ]
        recorded, replies = await self._run(_SETTLE, keys, args)
        return Settled(
            [bool(done) for done in recorded],
            [_claim_from(reply, f"{secret}-{index}") for index, reply in enumerate(replies)],
        )

    async def start(self, key: str, token: str, *, prepaid_used: bool = False) -> int:
        """Count one handler start (or confirm the claim's prepaid one), renew the lease to
        the length it was claimed for, and return the attempts including this one.

        ``prepaid_used``: an earlier attempt ran on the prepaid start, so this one counts.
        Raises ``LeaseLostError`` unless ``token`` holds a live lease on ``key``.
        """
        args: list[str | int] = [token, self._attempts_ttl_ms, 1 if prepaid_used else 0]
        attempts = int(await self._run(_START, [storage_key(key)], args))
        if attempts < 0:
            raise LeaseLostError(f"the lease on {key!r} is lost")
        return attempts

    async def renew(self, key: str, token: str, lease_seconds: float) -> bool:
        """Extend a live lease to ``lease_seconds`` from now; ``False`` if the token lost it."""
        _check_positive("lease_seconds", lease_seconds)
        args: list[str | int] = [token, _milliseconds(lease_seconds), self._attempts_ttl_ms]
        return bool(await self._run(_RENEW, [storage_key(key)], args))

    async def complete(
        self, key: str, token: str, outcome: Outcome, payload_hash: str, ttl_seconds: float
    ) -> bool:
        """Mark the key done for ``ttl_seconds``; ``False`` if the token lost the lease.

        Raises ``ValueError`` for an outcome other than ``HANDLED`` or ``DEAD_LETTERED``.
        """
        _check_mark(outcome, ttl_seconds)
        args: list[str | int] = [token, outcome.value, payload_hash, _milliseconds(ttl_seconds)]
        return bool(await self._run(_COMPLETE, [storage_key(key)], args))

    async def complete_with_effects(
        self,
        key: str,
        token: str,
        payload_hash: str,
        ttl_seconds: float,
        effects: Sequence[Effect],
    ) -> bool:
        """Apply ``effects`` and mark the key done as ``HANDLED`` in one script call.

        ``False`` (nothing applied) if the token lost the lease. Raises
        ``EffectsRefusedError`` (nothing applied, the lease kept) for writes that are not
        allowed or cannot all be applied, and ``ConfigurationError`` on a store that does
        not support effects (Redis Cluster).
        """
        if not self.supports_effects:
            raise ConfigurationError("this Redis store does not support atomic effects")
        _check_positive("ttl_seconds", ttl_seconds)
        # refused before the call: only allowed, well-formed commands ever reach the script
        check_effects(effects)
        keys = [storage_key(key)]
        index: dict[str, int] = {}
        args: list[str | int | bytes] = [token, payload_hash, _milliseconds(ttl_seconds)]
        for command, target, arguments in effects:
            position = index.get(target)
            if position is None:
                keys.append(target)
                position = index[target] = len(keys)
            args.extend((command, position, len(arguments)))
            args.extend(arguments)
        try:
            return bool(await self._run(_COMPLETE_WITH_EFFECTS, keys, args))
        except ResponseError as error:
            if str(error).startswith("EFFECTS "):
                raise EffectsRefusedError(str(error).removeprefix("EFFECTS ")) from error
            raise

    async def release(self, key: str, token: str, *, started: bool = False) -> bool:
        """Give the lease up, keeping attempts; ``False`` if the token lost the lease.

        The claim's prepaid start, if unconfirmed, is taken back unless ``started``.
        """
        args: list[str | int] = [token, self._attempts_ttl_ms, 1 if started else 0]
        return bool(await self._run(_RELEASE, [storage_key(key)], args))

    async def _run(
        self, script: _Script, keys: Sequence[str], args: Sequence[str | int | bytes]
    ) -> Any:
        try:
            return await script(self._client, keys, args)
        except UNAVAILABLE_ERRORS as error:
            raise StoreUnavailableError(f"Redis is unavailable: {error}") from error
        except ResponseError as error:
            # a server busy running another script refuses calls until it ends
            if str(error).startswith("BUSY "):
                raise StoreUnavailableError(f"Redis is unavailable: {error}") from error
            raise


def _claim_from(reply: Sequence[Any], token: str) -> Claim:
    status = int(reply[0])
    attempts = int(reply[1])
    if status == _CLAIMED:
        return Claim(ClaimStatus.CLAIMED, token=token, attempts=attempts, prepaid=reply[2] == 1)
    if status == _BUSY:
        return Claim(ClaimStatus.BUSY, retry_after=int(reply[2]) / 1000, attempts=attempts)
    return Claim(
        ClaimStatus.DUPLICATE,
        outcome=Outcome(_text(reply[2])),
        payload_hash=_text(reply[3]),
        attempts=attempts,
    )


def _text(value: str | bytes) -> str:
    """A reply string, whether or not the client decodes responses."""
    return value.decode() if isinstance(value, bytes) else value


def _milliseconds(seconds: float) -> int:
    # rounded down, so a BUSY answer never reports more time than the lease has
    return max(1, int(seconds * 1000))


def _check_mark(outcome: Outcome, ttl_seconds: float) -> None:
    if outcome not in DONE_OUTCOMES:
        raise ValueError(f"a key is done as handled or dead_lettered, not {outcome.value}")
    _check_positive("ttl_seconds", ttl_seconds)


def _check_positive(name: str, seconds: float) -> None:
    if not seconds > 0:
        raise ValueError(f"{name} must be positive, not {seconds}")


__all__ = ["UNAVAILABLE_ERRORS", "RedisIdempotencyStore"]
