"""``idempotency``: claim before the handler, mark done after it, release on failure (R4)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from eventkit import _crashpoints
from eventkit._crashpoints import crash_point
from eventkit.errors import ConfigurationError, LeaseLostError, StoreUnavailableError
from eventkit.idempotency.effects import RedisEffects
from eventkit.keys import key_prefix, payload_hash
from eventkit.middleware.retry import stray_cancel
from eventkit.outcomes import Outcome
from eventkit.ports import ClaimRequest, ClaimStatus, Completion

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Sequence

    from eventkit.delivery import Delivery
    from eventkit.middleware.route import DirectCall
    from eventkit.pipeline import Middleware, Next
    from eventkit.ports import Claim, Clock, EffectsStore, IdempotencyStore
    from eventkit.routing import HandlerSpec


# Enum members read through their class cost ~80 ns each on CPython 3.11; globals ~20
_CLAIMED = ClaimStatus.CLAIMED
_BUSY = ClaimStatus.BUSY
_DUPLICATE = ClaimStatus.DUPLICATE
_HANDLED = Outcome.HANDLED
_DEAD_LETTERED = Outcome.DEAD_LETTERED
_DUPLICATE_OUTCOME = Outcome.DUPLICATE
_DEFERRED = Outcome.DEFERRED


@dataclass(slots=True)
class IdempotencyCounts:
    """What the idempotency step saw; read by metrics and tests."""

    claimed: int = 0
    duplicate: int = 0
    busy: int = 0
    lease_lost: int = 0
    key_conflict: int = 0
    claim_calls: int = 0
    #: store calls that wrote queued DONE marks alone (most go with a claim)
    mark_calls: int = 0
    #: store calls a fail-open handler went without because the store was unreachable
    bypassed: int = 0


class IdempotencyGuard:
    """Claims keys in lease-sized chunks and keeps the state machine around each handler call.

    A delivery without a claim claims a chunk: itself and the deliveries queued behind it in
    its lane, as many as the lease covers at the observed handler pace, in one store call. A
    key seen twice in a chunk is claimed once; the second delivery claims after the first
    finished (and is then a duplicate). A key held by another lane of this worker is waited
    for, not deferred. ``DONE`` is written by this guard, token-checked, never by a handler.

    The chunk claim prepays each new key's first start, so a first attempt under a lease at
    least half fresh makes no store call. A plain handler's DONE mark is queued, and written
    in the same store call as the next chunk claim (of any lane), or by ``flush``: a lane
    holds the record unfinished until then. Fail-open and atomic-effect handlers write their
    DONE at once.

    For an atomic-effect handler the guard also hands each attempt a fresh ``RedisEffects``
    (``stage_effects``) and writes the successful attempt's staged writes with the DONE mark,
    in one ``complete_with_effects`` call.
    """

    def __init__(
        self,
        store: IdempotencyStore,
        *,
        namespace: str,
        lease_seconds: float,
        max_chunk: int,
        clock: Clock,
        prepare: Callable[[Delivery], bool],
        ttl_for: Callable[[HandlerSpec], float],
    ) -> None:
        self.store = store
        self.counts = IdempotencyCounts()
        self._namespace = namespace
        self._lease = lease_seconds
        self._max_chunk = max_chunk
        self._clock = clock
        self._prepare = prepare
        self._ttl_for = ttl_for
        # keys this worker holds a lease on, and the delivery holding each
        self._held: dict[str, Delivery] = {}
        # deliveries waiting for this worker's own running delivery of the same key
        self._waiters: dict[str, asyncio.Future[None]] = {}
        # claimed deliveries past their claim check (running, retrying, or being dead-lettered)
        # and when their lease was last renewed (monotonic seconds)
        self._running: dict[Delivery, float] = {}
        # key prefixes by event type (routed types only: keys are made after routing)
        self._prefixes: dict[str, str] = {}
        # observed seconds per handler call, to size chunks so they finish within the lease
        self._pace = 0.001
        # the staged writes of each atomic-effect delivery's latest attempt, until DONE
        self._staged: dict[Delivery, RedisEffects] = {}
        # DONE marks queued for the next store call, oldest first
        self._marks: dict[Delivery, Completion] = {}
        # store calls writing marks now: a flush waits for them too
        self._writing: set[asyncio.Future[None]] = set()

    def key_of(self, delivery: Delivery) -> str:
        """The idempotency key of a decoded delivery (``keys.event_key``), made once."""
        key = delivery.idempotency_key
        if key is None:
            event = delivery.event
            assert event is not None, "keys are derived after decoding"
            # one prefix per event type, so a key is a concatenation
            prefix = self._prefixes.get(event.event_type)
            if prefix is None:
                prefix = self._prefixes[event.event_type] = key_prefix(
                    self._namespace, event.event_type
                )
            identity = event.event_id if event.specversion is None else event.identity
            key = delivery.idempotency_key = prefix + identity
        return key

    def _chunk_size(self) -> int:
        fits = int(self._lease * 0.5 / self._pace)
        return max(1, min(self._max_chunk, fits))

    async def claim_ahead(self, delivery: Delivery) -> None:
        """Claim ``delivery`` and the chunk queued behind it in one store call."""
        key = self.key_of(delivery)
        chunk = [delivery]
        requests = [ClaimRequest(key, delivery.replay_id)]
        keys = {key}
        upcoming = delivery.upcoming
        if upcoming is not None:
            prepare = self._prepare
            for later in upcoming(self._chunk_size() - 1):
                if later.claim is not None:
                    # answered before: its key is taken, a later duplicate waits for it
                    if later.idempotency_key is not None:
                        keys.add(later.idempotency_key)
                    continue
                try:
                    claimable = prepare(later)
                except Exception:  # poison: its own turn dead-letters it
                    continue
                if not claimable:
                    continue
                key = self.key_of(later)
                if key in keys:
                    continue  # the same event twice: the second waits for the first
                keys.add(key)
                chunk.append(later)
                requests.append(ClaimRequest(key, later.replay_id))
        # renewals count from before the call, so the lease's age is never underestimated
        before = self._clock.monotonic()
        claims = await self._claim(requests)
        held = self._held
        running = self._running
        for claimed, claim in zip(chunk, claims, strict=True):
            claimed.claim = claim
            if claim.status is _CLAIMED:
                held[claimed.idempotency_key or ""] = claimed
                # renewed from now on: a chunk that runs slower than estimated keeps its leases
                running[claimed] = before
        if _crashpoints.ARMED is not None and any(c.status is _CLAIMED for c in claims):
            crash_point("after_claim")

    async def _claim_one(self, delivery: Delivery) -> Claim:
        key = self.key_of(delivery)
        before = self._clock.monotonic()
        [claim] = await self._claim([ClaimRequest(key, delivery.replay_id)])
        delivery.claim = claim
        if claim.status is _CLAIMED:
            self._held[key] = delivery
            self._running[delivery] = before
        if _crashpoints.ARMED is not None and claim.status is _CLAIMED:
            crash_point("after_claim")
        return claim

    async def _claim(self, requests: list[ClaimRequest]) -> list[Claim]:
        """Claim ``requests``, writing the queued DONE marks in the same store call."""
        self.counts.claim_calls += 1
        marks = self._marks
        if not marks:
            return await self.store.claim(requests, self._lease)
        self._marks = {}
        return await self._write(marks, requests)

    async def _write(
        self, marks: dict[Delivery, Completion], requests: Sequence[ClaimRequest]
    ) -> list[Claim]:
        """Write ``marks`` (and claim ``requests``) in one store call; on any failure the
        marks are queued again, oldest first, and the error propagates."""
        written = asyncio.get_running_loop().create_future()
        self._writing.add(written)
        try:
            settled = await self.store.settle(list(marks.values()), requests, self._lease)
        except BaseException:
            # not written, or not known to be: written again later (a repeat is refused
            # as lost, never applied twice)
            self._marks = {**marks, **self._marks}
            raise
        finally:
            self._writing.discard(written)
            written.set_result(None)
        counts = self.counts
        for (delivery, mark), recorded in zip(marks.items(), settled.recorded, strict=True):
            if not recorded:
                counts.lease_lost += 1  # the effect happened, the mark did not
            self._recorded(delivery, mark.key)
        if _crashpoints.ARMED is not None:
            crash_point("after_done")
        return settled.claims

    async def flush(self) -> None:
        """Write the queued DONE marks and wait for those other calls are writing; raises
        ``StoreUnavailableError`` (the marks stay queued) if the store is unreachable."""
        in_progress = list(self._writing)
        if self._marks:
            marks = self._marks
            self._marks = {}
            self.counts.mark_calls += 1
            await self._write(marks, ())
        if in_progress:
            await asyncio.wait(in_progress)

    async def _before_suspect_start(self) -> None:
        """Write the queued marks before a start that needs a store call of its own: such a
        record has run before (a retry, or a redelivery after a crash), so it may crash the
        worker again, and the records finished before it must not be lost with it."""
        self.counts.mark_calls += 1
        marks = self._marks
        self._marks = {}
        await self._write(marks, ())

    def _fresh(self, delivery: Delivery) -> bool:
        """Whether the lease of ``delivery`` is at least half fresh (its prepaid start may be
        used with no store call)."""
        renewed = self._running.get(delivery)
        return renewed is not None and self._clock.monotonic() - renewed < self._lease * 0.5

    def _let_go(self, key: str, delivery: Delivery) -> None:
        if self._held.get(key) is not delivery:
            return  # another delivery holds it now
        del self._held[key]
        self._wake(key)

    def _wake(self, key: str) -> None:
        """Wake the delivery waiting for this worker's own lease on ``key``, if any."""
        waiter = self._waiters.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _take_from_own(self, delivery: Delivery, key: str) -> Claim | None:
        """Resolve a BUSY answer on a key this worker holds; ``None`` if another holds it.

        A holder that has not started yet (claimed ahead) gives its claim up to this earlier
        delivery, so no delivery ever waits on one queued behind it; a holder that started is
        waited for, and then the key is asked for again (done by then: a duplicate).
        """
        holder = self._held.get(key)
        if holder is None or holder is delivery:
            return None
        if holder.lease_keeper is None:
            await self._give_up(holder)
        elif holder in self._marks or self._writing:
            # it finished and its mark is queued: write it, and the key is done
            await self.flush()
        else:
            waiter = self._waiters.get(key)
            if waiter is None:
                # made only when someone waits: most keys never have a waiter
                waiter = self._waiters[key] = asyncio.get_running_loop().create_future()
            await waiter
        return await self._claim_one(delivery)

    async def release_unstarted(self, deliveries: Iterable[Delivery]) -> None:
        """Release the claims of deliveries that will not run here (revoke, shutdown).

        Queued DONE marks are written first: a record cut off after its handler succeeded
        (its lane's task was cancelled, say) is then final, not left to run again.
        """
        if self._marks or self._writing:  # marks in flight too: a release must not pass them
            with contextlib.suppress(StoreUnavailableError):
                await self.flush()
        for delivery in deliveries:
            await self._give_up(delivery)

    # long on purpose: a helper coroutine on the per-record path costs ~0.1 µs
    def middleware(  # noqa: PLR0915
        self, spec: HandlerSpec, direct: DirectCall | None = None
    ) -> Middleware:
        """The idempotency step of one handler's chain.

        With ``direct`` (the retry step around the handler comes next), the step makes the
        first attempt itself, as the retry step would: start counted, handler called.
        """
        ttl = self._ttl_for(spec)
        counts = self.counts
        monotonic = self._clock.monotonic
        store = self.store
        running = self._running
        atomic = spec.options.atomic_effects
        if atomic:
            self._check_effects_store(spec)
        fail_open = spec.options.fail_open
        half_lease = self._lease * 0.5
        # read once: an unarmed process pays nothing for the crash points
        crashing = _crashpoints.ARMED is not None

        def wrap(next_: Next) -> Next:  # noqa: PLR0915
            async def run(delivery: Delivery) -> Outcome:  # noqa: PLR0912, PLR0915
                outcome = delivery.unrecorded
                if outcome is not None:
                    # the handler finished before; only its DONE mark is left to write
                    claim = delivery.claim
                    assert claim is not None, "only a claimed delivery is recorded"
                    key = self.key_of(delivery)
                    token = claim.token
                    assert token is not None, "a claim that was granted has a token"
                else:
                    claim = delivery.claim
                    # the claim, and asking again after waiting for this worker's own lease
                    try:
                        if claim is None:
                            await self.claim_ahead(delivery)
                            claim = delivery.claim
                            assert claim is not None
                        if claim.status is not _CLAIMED:
                            settled = await self._not_claimed(delivery, claim)
                            if settled is not None:
                                return settled
                            claim = delivery.claim
                            assert claim is not None
                    except StoreUnavailableError:
                        if not fail_open:
                            raise  # fail-closed: deferred, the partition waits
                        counts.bypassed += 1
                        delivery.claim = None
                        return await _unprotected(delivery, next_, direct)
                    counts.claimed += 1
                    key = delivery.idempotency_key or self.key_of(delivery)
                    token = claim.token
                    assert token is not None, "a claim that was granted has a token"
                    # attempts count across deliveries: a crash loop runs out of them too
                    delivery.attempt = claim.attempts
                    delivery.lease_keeper = self
                    started = monotonic()
                    # renewed by the lease keeper from the claim on (or from now, if it was
                    # dropped as lost: the start then finds out)
                    renewed = running.get(delivery)
                    if renewed is None:
                        renewed = running[delivery] = started
                    try:
                        if (
                            direct is not None
                            and delivery.verdict is None
                            and delivery.attempt < direct.max_attempts
                        ):
                            delivery.attempt += 1
                            error: Exception | None = None
                            try:
                                if not claim.prepaid or started - renewed >= half_lease:
                                    # a start of its own, or a prepaid one on an old lease:
                                    # the store call renews it for the handler
                                    running[delivery] = started
                                    if self._marks and not fail_open:
                                        await self._before_suspect_start()
                                    if fail_open:
                                        counted = await self._start_failing_open(key, token)
                                    else:
                                        counted = await store.start(key, token)
                                    if counted is not None:
                                        # the store's count: one more after an uncertain start
                                        delivery.attempt = counted
                                await direct.call(delivery)
                            except Exception as exc:
                                error = exc
                            except asyncio.CancelledError:
                                error = stray_cancel()
                            # retried outside the except block: the next attempt sees no exception
                            if error is None:
                                outcome = _HANDLED
                            else:
                                outcome = await direct.after_failure(delivery, error)
                        else:
                            outcome = await next_(delivery)
                    except BaseException:
                        await self._give_up(delivery)
                        raise
                    self._pace = 0.9 * self._pace + 0.1 * max(monotonic() - started, 1e-6)
                    if outcome is not _HANDLED and outcome is not _DEAD_LETTERED:
                        await self._give_up(delivery)
                        return outcome
                # DONE, token-checked; never by the handler
                event = delivery.event
                digest = payload_hash(event.data) if event is not None else ""
                delivery.unrecorded = outcome
                if crashing:
                    crash_point("before_done")
                # StoreUnavailableError propagates: the record is deferred and comes back
                if atomic:
                    recorded = await self._complete_atomic(
                        delivery, outcome, key=key, token=token, digest=digest, ttl=ttl
                    )
                    if not recorded and outcome is _HANDLED:
                        # nothing was applied: finishing the record would lose its effect,
                        # so it is claimed again (a duplicate if another owner finished it)
                        counts.lease_lost += 1
                        delivery.unrecorded = None
                        await self._give_up(delivery)
                        return _DEFERRED
                elif fail_open:
                    recorded = await self._complete_failing_open(key, token, outcome, digest, ttl)
                else:
                    # queued: the next claim or flush writes it, the lane waits for it
                    self._marks[delivery] = Completion(key, token, outcome, digest, ttl)
                    return outcome
                if not recorded:
                    counts.lease_lost += 1  # the effect happened, the mark did not
                if crashing:
                    crash_point("after_done")
                self._recorded(delivery, key)
                return outcome

            return run

        return wrap

    def stage_effects(self, delivery: Delivery) -> RedisEffects:
        """A fresh ``RedisEffects`` for the attempt of ``delivery`` about to run; the
        previous attempt's writes are dropped (and sealed, so a stray task cannot add more)."""
        effects = RedisEffects()
        previous = self._staged.get(delivery)
        if previous is not None:
            previous.seal()
        self._staged[delivery] = effects
        return effects

    def _check_effects_store(self, spec: HandlerSpec) -> None:
        """Refuse, at start-up, an atomic-effect handler on a store that cannot apply its
        writes with DONE as one unit."""
        if getattr(self.store, "supports_effects", False) is not True:
            raise ConfigurationError(
                f"handler {spec.name} uses atomic effects (atomic_effects=True), but the "
                f"idempotency store {type(self.store).__name__} cannot apply them atomically "
                "with the DONE mark; atomic effects need a single Redis node or a Sentinel "
                "primary (never Redis Cluster) or the in-memory store"
            )

    async def _complete_atomic(
        self, delivery: Delivery, outcome: Outcome, *, key: str, token: str, digest: str, ttl: float
    ) -> bool:
        """DONE for an atomic-effect handler: with its staged writes if it was handled.

        Writes the store refuses are never applied: the claim is released and
        ``EffectsRefusedError`` propagates (the record is dead-lettered).
        """
        store = cast("EffectsStore", self.store)
        if outcome is not _HANDLED:
            # a dead-lettered record's attempts all failed: none of their writes land
            self._staged.pop(delivery, None)
            return await store.complete(key, token, outcome, digest, ttl)
        staged = self._staged.get(delivery)
        spec = delivery.spec
        # an attempt of a handler taking RedisEffects always staged (maybe nothing): none
        # here would mean its writes were lost, and DONE would go without them
        assert staged is not None or spec is None or not spec.signature.wants_effects
        # sealed before the call: a write staged after the handler returned is an error
        effects = staged.seal() if staged is not None else ()
        try:
            return await store.complete_with_effects(key, token, digest, ttl, effects)
        except StoreUnavailableError:
            raise  # deferred: the same staged writes go with the DONE when it is tried again
        except Exception:
            # refused, or a bug: nothing was applied; the claim must not be held forever
            delivery.unrecorded = None
            await self._give_up(delivery)
            raise

    async def _not_claimed(self, delivery: Delivery, claim: Claim) -> Outcome | None:
        """Settle a claim answered BUSY or DUPLICATE; ``None`` once the key was claimed after
        all (it was held by this worker's own delivery, which gave it up or finished)."""
        key = self.key_of(delivery)
        while claim.status is _BUSY:
            # held by this worker itself: take it over, or wait for the running one
            retaken = await self._take_from_own(delivery, key)
            if retaken is None:
                break
            claim = retaken
        if claim.status is _DUPLICATE:
            self.counts.duplicate += 1
            event = delivery.event
            if (
                claim.payload_hash is not None
                and event is not None
                and claim.payload_hash != payload_hash(event.data)
            ):
                self.counts.key_conflict += 1
            return _DUPLICATE_OUTCOME
        if claim.status is _BUSY:
            self.counts.busy += 1
            delivery.claim = None
            delivery.retry_after = claim.retry_after
            return _DEFERRED
        return None

    def _recorded(self, delivery: Delivery, key: str) -> None:
        """Forget a delivery whose DONE mark was written (or refused as lost); ``_let_go``
        inlined, as this runs once per record."""
        delivery.unrecorded = None
        delivery.claim = None
        delivery.lease_keeper = None
        self._running.pop(delivery, None)
        if self._staged:
            self._staged.pop(delivery, None)
        if self._held.get(key) is delivery:
            del self._held[key]
            if self._waiters:
                self._wake(key)
        hook = delivery.on_recorded
        if hook is not None:
            delivery.on_recorded = None
            hook()

    async def give_up(self, delivery: Delivery) -> None:
        """Release whatever claim ``delivery`` still holds (its chain ended before the
        idempotency step, for example a user middleware finished it), unless its DONE mark
        is pending."""
        if delivery.claim is not None and delivery.unrecorded is None:
            await self._give_up(delivery)

    async def _give_up(self, delivery: Delivery) -> None:
        """Release the claim so that a later delivery may claim it again."""
        claim = delivery.claim
        delivery.claim = None
        delivery.lease_keeper = None
        self._running.pop(delivery, None)
        if self._staged:
            # a released attempt's writes never land; the next delivery stages its own
            self._staged.pop(delivery, None)
        if self._marks:
            self._marks.pop(delivery, None)  # cut off by a drain: the next owner runs it
        if claim is None or claim.token is None:
            return
        key = self.key_of(delivery)
        self._let_go(key, delivery)
        # a prepaid start the handler ran on stays counted; one never used is taken back
        started = claim.prepaid and delivery.attempt > claim.attempts
        await _release_quietly(self.store, key, claim.token, started)

    async def keep(self, delivery: Delivery, seconds: float) -> None:
        """Keep the lease of ``delivery`` for ``seconds`` more than a full lease (a back-off
        is about to wait that long); raises ``LeaseLostError`` if it is gone already."""
        claim = delivery.claim
        if claim is None or claim.token is None:
            return
        try:
            if self._marks:
                # the wait would hold the queued marks (and their records' commits) up
                await self.flush()
            kept = await self.store.renew(self.key_of(delivery), claim.token, seconds + self._lease)
        except StoreUnavailableError:
            spec = delivery.spec
            if spec is None or not spec.options.fail_open:
                raise
            self.counts.bypassed += 1  # fail-open: the retry goes on without the lease
            return
        if not kept:
            self.counts.lease_lost += 1
            raise LeaseLostError("the idempotency lease expired before the retry")

    def starting(self, delivery: Delivery) -> Awaitable[object]:
        """Record a handler start in the store (the store call, to await), taking the
        attempt number from the store's count; it raises ``LeaseLostError`` if the lease is
        gone."""
        claim = delivery.claim
        if claim is None or claim.token is None:
            return _nothing()
        # the attempt the claim prepaid, or a later one (which counts on top of it)
        prepaid_used = claim.prepaid and delivery.attempt > claim.attempts + 1
        if claim.prepaid and not prepaid_used and self._fresh(delivery):
            return _nothing()  # the claim counted this start, and the lease is fresh enough
        return self._start(delivery, claim.token, prepaid_used)

    async def _start(self, delivery: Delivery, token: str, prepaid_used: bool) -> None:
        key = delivery.idempotency_key or self.key_of(delivery)
        spec = delivery.spec
        if spec is not None and spec.options.fail_open:
            counted = await self._start_failing_open(key, token, prepaid_used)
        else:
            if self._marks:
                await self._before_suspect_start()
            counted = await self.store.start(key, token, prepaid_used=prepaid_used)
        if counted is not None:
            delivery.attempt = counted

    async def _start_failing_open(
        self, key: str, token: str, prepaid_used: bool = False
    ) -> int | None:
        """Count a fail-open handler's start if the store answers (its count), and run it
        anyway if not (``None``)."""
        try:
            return await self.store.start(key, token, prepaid_used=prepaid_used)
        except StoreUnavailableError:
            self.counts.bypassed += 1
            return None

    async def _complete_failing_open(
        self, key: str, token: str, outcome: Outcome, digest: str, ttl: float
    ) -> bool:
        """DONE for a fail-open handler; if the store is unreachable the record finishes
        without it (its lease expires by itself)."""
        try:
            return await self.store.complete(key, token, outcome, digest, ttl)
        except StoreUnavailableError:
            self.counts.bypassed += 1
            return True  # not lost: the mark was skipped on purpose, and counted as such

    async def keep_leases(self) -> None:
        """Renew the leases of running handlers, forever (the worker runs it as a task).

        Every third of a lease, the queued DONE marks are written, and each delivery whose
        lease was last renewed a third of a lease ago or more (claimed ahead, running, or
        retrying) is renewed to a full lease; a lease the store no longer grants is dropped
        (its DONE will be refused and counted as lost). A store outage skips a round.
        """
        period = self._lease / 3
        while True:
            await self._clock.sleep(period)
            if self._marks:
                try:
                    await self.flush()
                except StoreUnavailableError:
                    continue
            now = self._clock.monotonic()
            for delivery, renewed in list(self._running.items()):
                claim = delivery.claim
                if claim is None or claim.token is None:
                    self._running.pop(delivery, None)
                    continue
                if now - renewed < period:
                    continue
                try:
                    kept = await self.store.renew(self.key_of(delivery), claim.token, self._lease)
                except StoreUnavailableError:
                    break  # try again next round; the lease may still hold until then
                if kept:
                    self._running[delivery] = now
                else:
                    self._running.pop(delivery, None)


async def _nothing() -> None:
    return None


async def _unprotected(delivery: Delivery, next_: Next, direct: DirectCall | None) -> Outcome:
    """A fail-open handler's record while the store is unreachable: the chain after the
    idempotency step, with no claim, no start count and no DONE mark."""
    if direct is None or delivery.verdict is not None or delivery.attempt >= direct.max_attempts:
        return await next_(delivery)
    # the first attempt, made here as the idempotency step makes it when it holds a claim
    delivery.attempt += 1
    error: Exception | None = None
    try:
        await direct.call(delivery)
    except Exception as exc:
        error = exc
    except asyncio.CancelledError:
        error = stray_cancel()
    return _HANDLED if error is None else await direct.after_failure(delivery, error)


async def _release_quietly(store: IdempotencyStore, key: str, token: str, started: bool) -> None:
    # if the store is down the lease expires by itself; the record stays unfinished anyway
    with contextlib.suppress(StoreUnavailableError):
        await store.release(key, token, started=started)
