"""``InMemoryIdempotencyStore``: the R4 lease state machine in one process.

It has the semantics the Redis store has, so one contract suite runs on both; it is the store
of the in-memory bus and of tests, never of a Kafka worker unless chosen explicitly (R1).
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import msgspec

from eventkit._mutation import is_planted
from eventkit.clock import SystemClock
from eventkit.errors import LeaseLostError, StoreUnavailableError
from eventkit.idempotency.effects import check_effects
from eventkit.idempotency.memory_effects import MemoryEffectsTarget
from eventkit.outcomes import Outcome
from eventkit.ports import Claim, ClaimRequest, ClaimStatus, Clock, Settled

if TYPE_CHECKING:
    from collections.abc import Sequence

    from eventkit.idempotency.effects import Effect
    from eventkit.ports import Completion

# an Enum member read through its class costs ~80 ns on CPython 3.11, a module global ~20
_CLAIMED = ClaimStatus.CLAIMED

#: The outcomes ``complete`` records; every other outcome is refused.
DONE_OUTCOMES = frozenset({Outcome.HANDLED, Outcome.DEAD_LETTERED})

#: How long a key that is not done remembers its attempts after its last lease ended.
DEFAULT_ATTEMPTS_TTL = 7 * 24 * 3600.0

#: At least this many claims (and at least as many as there are keys) between sweeps.
DEFAULT_SWEEP_EVERY = 1024


class _Entry(msgspec.Struct, gc=False):
    """One key. Its state is derived from the deadlines, so expiry needs no timer.

    Leased while ``token`` is set and ``lease_deadline`` is ahead; otherwise done while
    ``outcome`` is set and ``done_deadline`` is ahead; otherwise free. A replay lease sits on
    top of a done record, so a replay that is released or crashes leaves the key done.
    """

    attempts: int = 0
    token: str | None = None
    lease_deadline: float = 0.0
    # the length the lease was claimed for: a handler start renews it to that again
    lease_seconds: float = 0.0
    lease_replay_id: str | None = None
    # how long a free key remembers its attempts (crash loops end only if they are kept)
    retain_until: float = 0.0
    outcome: Outcome | None = None
    payload_hash: str | None = None
    done_deadline: float = 0.0
    # created on the first completed replay: most keys are never replayed
    completed_replays: set[str] | None = None
    # the token whose claim prepaid the first start, until a start, DONE or release settles it
    prepaid_token: str | None = None

    def known_attempts(self) -> int:
        """The starts known to have happened: an unconfirmed prepaid start is not one."""
        return self.attempts - 1 if self.prepaid_token is not None else self.attempts

    def leased(self, now: float) -> bool:
        return self.token is not None and now < self.lease_deadline

    def done(self, now: float) -> bool:
        return self.outcome is not None and now < self.done_deadline

    def alive(self, now: float) -> bool:
        if self.leased(now):
            return True
        if self.outcome is not None:
            # a done record past its TTL takes the whole key with it, attempts and replays too
            return now < self.done_deadline
        return self.attempts > 0 and now < self.retain_until


class InMemoryIdempotencyStore:
    """The ``IdempotencyStore`` port in process memory, with the whole R4 state machine.

    - ``claim`` answers in request order: a free key (or one whose lease expired) is
      ``CLAIMED`` with a fresh token and its attempts kept; a key under a live lease is
      ``BUSY`` with the seconds left; a done key is ``DUPLICATE`` with its outcome, hash and
      attempts. A request with a ``replay_id`` claims a key done as ``DEAD_LETTERED`` once per
      replay id, with attempts counted afresh. A key named twice in one call is ``BUSY`` the
      second time: the first request's lease holds it.
    - ``start``, ``renew``, ``complete`` and ``release`` need the token of a live lease;
      otherwise they return ``False`` (``start`` raises ``LeaseLostError``).
    - Done keys are forgotten after their TTL; free keys keep their attempts for
      ``attempts_ttl_seconds``. Expired entries are dropped lazily, when a call touches them
      and in a sweep after as many claims as there are keys (at least ``sweep_every``), so
      memory stays bounded at a constant cost per claim.

    - ``complete_with_effects`` applies staged writes to ``effects_target`` (a
      ``MemoryEffectsTarget`` on the store's clock) and marks the key done, both or neither.

    ``set_unavailable(True)`` is a fault-injection switch for tests and the in-memory bus:
    every store call then raises ``StoreUnavailableError``, as an unreachable Redis would.
    """

    __slots__ = (
        "_attempts_ttl",
        "_claims_since_sweep",
        "_clock",
        "_entries",
        "_sweep_every",
        "_unavailable",
        "effects_target",
    )

    #: atomic-effect handlers may run on this store (``EffectsStore``)
    supports_effects = True

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        attempts_ttl_seconds: float = DEFAULT_ATTEMPTS_TTL,
        sweep_every: int = DEFAULT_SWEEP_EVERY,
    ) -> None:
        if attempts_ttl_seconds <= 0:
            raise ValueError("attempts_ttl_seconds must be positive")
        if sweep_every < 1:
            raise ValueError("sweep_every must be at least 1")
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._attempts_ttl = attempts_ttl_seconds
        self._sweep_every = sweep_every
        self._claims_since_sweep = 0
        self._entries: dict[str, _Entry] = {}
        self._unavailable = False
        #: where ``complete_with_effects`` writes; tests read the effects back from it
        self.effects_target = MemoryEffectsTarget(self._clock)

    def set_unavailable(self, unavailable: bool) -> None:
        """Fault injection: while on, every store call raises ``StoreUnavailableError``."""
        self._unavailable = unavailable

    def __len__(self) -> int:
        """How many keys the store still remembers (expired ones are dropped first)."""
        self._sweep(self._clock.monotonic())
        return len(self._entries)

    async def claim(self, requests: Sequence[ClaimRequest], lease_seconds: float) -> list[Claim]:
        """Claim every key at once; answers are in request order.

        Raises ``ValueError`` for a lease that is not positive.
        """
        if self._unavailable:
            self._check_available()
        _check_positive("lease_seconds", lease_seconds)
        now = self._clock.monotonic()
        entries = self._entries
        self._claims_since_sweep += len(requests)
        # sweeping every max(sweep_every, size) claims keeps the cost per claim constant
        if self._claims_since_sweep >= max(self._sweep_every, len(entries)):
            self._sweep(now)
        # one random secret per call, a counter per key: tokens stay unguessable and unique
        secret = secrets.token_hex(12)
        deadline = now + lease_seconds
        retain_until = deadline + self._attempts_ttl
        claims = []
        for index, request in enumerate(requests):
            key = request.key
            if key not in entries:
                # the common case, a key never seen: leased at once
                token = f"{secret}-{index}"
                entries[key] = _Entry(
                    attempts=1,
                    token=token,
                    lease_deadline=deadline,
                    lease_seconds=lease_seconds,
                    lease_replay_id=request.replay_id,
                    retain_until=retain_until,
                    prepaid_token=token,
                )
                claims.append(Claim(_CLAIMED, token=token, prepaid=True))
            else:
                claims.append(self._claim_one(request, now, lease_seconds, f"{secret}-{index}"))
        return claims

    async def settle(
        self,
        completions: Sequence[Completion],
        requests: Sequence[ClaimRequest],
        lease_seconds: float,
    ) -> Settled:
        """Write DONE marks, then claim keys: ``complete`` for each mark, then ``claim``.

        Raises ``ValueError`` (writing nothing) for a mark ``complete`` would refuse.
        """
        if self._unavailable:
            self._check_available()
        _check_positive("lease_seconds", lease_seconds)
        for mark in completions:
            _check_mark(mark.outcome, mark.ttl_seconds)
        recorded = [
            await self.complete(m.key, m.token, m.outcome, m.payload_hash, m.ttl_seconds)
            for m in completions
        ]
        claims = await self.claim(requests, lease_seconds) if requests else []
        return Settled(recorded, claims)

    async def start(self, key: str, token: str, *, prepaid_used: bool = False) -> int:
        """Count one handler start (or confirm the claim's prepaid one), renew the lease to
        the length it was claimed for, and return the attempts including this one.

        ``prepaid_used``: an earlier attempt ran on the prepaid start, so this one counts.
        Raises ``LeaseLostError`` unless ``token`` holds a live lease on ``key``.
        """
        if self._unavailable:
            self._check_available()
        entry = self._entries.get(key)
        now = self._clock.monotonic()
        if entry is None or entry.token != token or now >= entry.lease_deadline:
            raise LeaseLostError(f"the lease on {key!r} is lost")
        # a key claimed ahead may start late in its lease: the handler gets a whole one
        entry.lease_deadline = now + entry.lease_seconds
        entry.retain_until = entry.lease_deadline + self._attempts_ttl
        if entry.prepaid_token == token and not prepaid_used:
            entry.prepaid_token = None  # this is the start the claim counted
        else:
            # an uncertain prepaid start of an expired lease is charged from now on
            entry.prepaid_token = None
            entry.attempts += 1
        return entry.attempts

    async def renew(self, key: str, token: str, lease_seconds: float) -> bool:
        """Extend a live lease to ``lease_seconds`` from now; ``False`` if the token lost it."""
        self._check_available()
        _check_positive("lease_seconds", lease_seconds)
        now = self._clock.monotonic()
        entry = self._held(key, token, now)
        if entry is None:
            return False
        entry.lease_deadline = now + lease_seconds
        entry.retain_until = entry.lease_deadline + self._attempts_ttl
        return True

    async def complete(
        self, key: str, token: str, outcome: Outcome, payload_hash: str, ttl_seconds: float
    ) -> bool:
        """Mark the key done for ``ttl_seconds``; ``False`` if the token lost the lease.

        Raises ``ValueError`` for an outcome other than ``HANDLED`` or ``DEAD_LETTERED``.
        """
        if self._unavailable:
            self._check_available()
        _check_mark(outcome, ttl_seconds)
        now = self._clock.monotonic()
        entry = self._entries.get(key)
        if entry is None or entry.token != token or now >= entry.lease_deadline:
            if not is_planted("complete_without_token_check"):
                return False
            # planted bug: a stale or foreign token overwrites whatever holds the key
            entry = self._entries.setdefault(key, _Entry())
        _mark_done(entry, outcome, payload_hash, now + ttl_seconds)
        return True

    async def complete_with_effects(
        self,
        key: str,
        token: str,
        payload_hash: str,
        ttl_seconds: float,
        effects: Sequence[Effect],
    ) -> bool:
        """Apply ``effects`` and mark the key done as ``HANDLED``, both or neither.

        ``False`` (nothing applied) if the token lost the lease. Raises
        ``EffectsRefusedError`` (nothing applied, the lease kept) for writes that cannot all
        be applied.
        """
        self._check_available()
        _check_positive("ttl_seconds", ttl_seconds)
        check_effects(effects)
        now = self._clock.monotonic()
        entry = self._held(key, token, now)
        if entry is None:
            if is_planted("effects_without_token_check"):
                # planted bug: a lost lease's writes land anyway, beside the next owner's
                self.effects_target.apply(effects)
            return False
        self.effects_target.apply(effects)
        _mark_done(entry, Outcome.HANDLED, payload_hash, now + ttl_seconds)
        return True

    async def release(self, key: str, token: str, *, started: bool = False) -> bool:
        """Give the lease up, keeping attempts; ``False`` if the token lost the lease.

        The claim's prepaid start, if unconfirmed, is taken back unless ``started``.
        """
        self._check_available()
        now = self._clock.monotonic()
        entry = self._held(key, token, now)
        if entry is None:
            return False
        if entry.prepaid_token == token:
            entry.prepaid_token = None
            # the planted bug charges a record revoked before it started
            if not started and not is_planted("release_keeps_prepaid_start"):
                entry.attempts -= 1
        entry.token = None
        entry.retain_until = now + self._attempts_ttl
        if not entry.alive(now):
            del self._entries[key]
        return True

    def _claim_one(
        self, request: ClaimRequest, now: float, lease_seconds: float, token: str
    ) -> Claim:
        entry = self._live(request.key, now)
        if entry is None:
            entry = self._entries[request.key] = _Entry()
        if entry.leased(now):
            if is_planted("busy_as_duplicate"):
                # planted bug: a live lease is mistaken for a finished key
                return Claim(
                    ClaimStatus.DUPLICATE, outcome=Outcome.HANDLED, attempts=entry.attempts
                )
            return Claim(
                ClaimStatus.BUSY,
                retry_after=entry.lease_deadline - now,
                attempts=entry.known_attempts(),
            )
        if entry.done(now):
            replay_id = request.replay_id
            if (
                replay_id is None
                or entry.outcome is not Outcome.DEAD_LETTERED
                or (entry.completed_replays is not None and replay_id in entry.completed_replays)
            ):
                return Claim(
                    ClaimStatus.DUPLICATE,
                    outcome=entry.outcome,
                    payload_hash=entry.payload_hash,
                    attempts=entry.attempts,
                )
            if entry.lease_replay_id != replay_id:
                # a new replay starts its own attempt count; the same replay after a crash keeps it
                entry.attempts = 0
                entry.prepaid_token = None
        return self._lease(entry, request.replay_id, now, lease_seconds, token)

    def _lease(
        self, entry: _Entry, replay_id: str | None, now: float, lease_seconds: float, token: str
    ) -> Claim:
        entry.token = token
        entry.lease_deadline = now + lease_seconds
        entry.lease_seconds = lease_seconds
        entry.lease_replay_id = replay_id
        entry.retain_until = entry.lease_deadline + self._attempts_ttl
        if entry.attempts == 0:
            # never started: the claim counts the first start now, provisionally
            entry.attempts = 1
            entry.prepaid_token = token
            return Claim(_CLAIMED, token=token, prepaid=True)
        # a stale prepaid start (its lease expired) stays until the next start charges it
        return Claim(_CLAIMED, token=token, attempts=entry.known_attempts())

    def _held(self, key: str, token: str, now: float) -> _Entry | None:
        """The entry if ``token`` holds a live lease on it."""
        entry = self._entries.get(key)
        # a live lease is one whose token matches and whose deadline is ahead; a stale entry
        # fails that test and is dropped by the next claim or sweep that touches it
        if entry is None or entry.token != token or now >= entry.lease_deadline:
            return None
        return entry

    def _live(self, key: str, now: float) -> _Entry | None:
        """The entry of ``key``, dropping it first if it has expired."""
        entry = self._entries.get(key)
        if entry is not None and not entry.alive(now):
            del self._entries[key]
            return None
        return entry

    def _sweep(self, now: float) -> None:
        self._claims_since_sweep = 0
        expired = [key for key, entry in self._entries.items() if not entry.alive(now)]
        for key in expired:
            del self._entries[key]

    def _check_available(self) -> None:
        if self._unavailable:
            raise StoreUnavailableError("the in-memory store is switched to unavailable")


def _mark_done(entry: _Entry, outcome: Outcome, payload_hash: str, deadline: float) -> None:
    """End the lease of ``entry`` with its outcome, until ``deadline``."""
    if entry.lease_replay_id is not None:
        if entry.completed_replays is None:
            entry.completed_replays = set()
        # this replay id may never claim the key again
        entry.completed_replays.add(entry.lease_replay_id)
    entry.outcome = outcome
    entry.payload_hash = payload_hash
    entry.done_deadline = deadline
    entry.token = None
    entry.prepaid_token = None


def _check_mark(outcome: Outcome, ttl_seconds: float) -> None:
    if outcome not in DONE_OUTCOMES:
        raise ValueError(f"a key is done as handled or dead_lettered, not {outcome.value}")
    if not ttl_seconds > 0:
        _check_positive("ttl_seconds", ttl_seconds)


def _check_positive(name: str, seconds: float) -> None:
    if not seconds > 0:
        raise ValueError(f"{name} must be positive, not {seconds}")
