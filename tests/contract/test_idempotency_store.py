"""The idempotency store contract (R4): every adapter of ``IdempotencyStore`` must pass it.

Written once against the port; ``store_harness`` runs it on each adapter. Durations are
multiples of the harness's ``lease`` and ``ttl`` so adapters on real time can keep them short.
The last section holds checks of the in-memory adapter's own test seams.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import pytest

from eventkit.errors import LeaseLostError, StoreUnavailableError
from eventkit.fakeclock import FakeClock
from eventkit.idempotency import InMemoryIdempotencyStore, RedisIdempotencyStore
from eventkit.idempotency.effects import (
    MAX_SAFE_INTEGER,
    Effect,
    EffectsRefusedError,
    RedisEffects,
)
from eventkit.outcomes import Outcome
from eventkit.ports import Claim, ClaimRequest, ClaimStatus, Completion

if TYPE_CHECKING:
    from eventkit.ports import EffectsStore
    from tests.contract.conftest import StoreHarness

HASH = "sha256:payload-a"
OTHER_HASH = "sha256:payload-b"


async def claim(harness: StoreHarness, key: str, replay_id: str | None = None) -> Claim:
    """Claim one key with the harness's lease."""
    (answer,) = await harness.store.claim([ClaimRequest(key, replay_id)], harness.lease)
    return answer


async def claimed_token(harness: StoreHarness, key: str, replay_id: str | None = None) -> str:
    """Claim one key that must be free and return its lease token."""
    answer = await claim(harness, key, replay_id)
    assert answer.status is ClaimStatus.CLAIMED
    assert answer.token is not None
    return answer.token


async def done(
    harness: StoreHarness, key: str, outcome: Outcome = Outcome.HANDLED, payload_hash: str = HASH
) -> None:
    """Claim, start and complete one key."""
    token = await claimed_token(harness, key)
    await harness.store.start(key, token)
    assert await harness.store.complete(key, token, outcome, payload_hash, harness.ttl)


# --- claim ------------------------------------------------------------------------------------


async def test_claim_of_free_key_is_claimed_with_token(store_harness: StoreHarness) -> None:
    """A key nobody holds is CLAIMED with a token and no attempts yet."""
    answer = await claim(store_harness, "k")
    assert answer.status is ClaimStatus.CLAIMED
    assert answer.token
    assert answer.attempts == 0


async def test_tokens_differ_between_claims(store_harness: StoreHarness) -> None:
    """Every claim gets its own token, so one lease's token never works for another."""
    tokens = {await claimed_token(store_harness, key) for key in ("a", "b", "c")}
    assert len(tokens) == 3


async def test_claim_while_leased_is_busy_never_duplicate(store_harness: StoreHarness) -> None:
    """A key under a live lease is BUSY with the lease's remaining time, not DUPLICATE."""
    await claimed_token(store_harness, "k")
    answer = await claim(store_harness, "k")
    assert answer.status is ClaimStatus.BUSY
    assert 0 < answer.retry_after <= store_harness.lease
    assert answer.token is None
    assert answer.outcome is None


async def test_busy_retry_after_counts_down(store_harness: StoreHarness) -> None:
    """``retry_after`` of a BUSY answer shrinks as the lease runs down."""
    await claimed_token(store_harness, "k")
    await store_harness.pass_time(store_harness.lease * 0.5)
    answer = await claim(store_harness, "k")
    assert answer.status is ClaimStatus.BUSY
    assert 0 < answer.retry_after <= store_harness.lease * 0.5


async def test_expired_lease_is_taken_over_keeping_attempts(store_harness: StoreHarness) -> None:
    """After a crashed holder's lease expires the next claim is CLAIMED, attempts kept."""
    store = store_harness.store
    crashed = await claimed_token(store_harness, "k")
    assert await store.start("k", crashed) == 1
    await store_harness.pass_time(store_harness.lease * 1.5)
    answer = await claim(store_harness, "k")
    assert answer.status is ClaimStatus.CLAIMED
    assert answer.token not in (None, crashed)
    assert answer.attempts == 1


async def test_same_key_twice_in_one_batch_is_busy_second(store_harness: StoreHarness) -> None:
    """A key named twice in one claim call is CLAIMED once, then BUSY under that lease."""
    first, second = await store_harness.store.claim(
        [ClaimRequest("k"), ClaimRequest("k")], store_harness.lease
    )
    assert first.status is ClaimStatus.CLAIMED
    assert second.status is ClaimStatus.BUSY


async def test_batch_claim_answers_in_request_order(store_harness: StoreHarness) -> None:
    """A batch with free, leased and done keys answers each in request order."""
    await claimed_token(store_harness, "leased")
    await done(store_harness, "done")
    answers = await store_harness.store.claim(
        [
            ClaimRequest("free-1"),
            ClaimRequest("leased"),
            ClaimRequest("done"),
            ClaimRequest("free-2"),
        ],
        store_harness.lease,
    )
    assert [answer.status for answer in answers] == [
        ClaimStatus.CLAIMED,
        ClaimStatus.BUSY,
        ClaimStatus.DUPLICATE,
        ClaimStatus.CLAIMED,
    ]
    assert answers[2].outcome is Outcome.HANDLED


async def test_empty_batch_claims_nothing(store_harness: StoreHarness) -> None:
    """Claiming no keys answers an empty list."""
    assert await store_harness.store.claim([], store_harness.lease) == []


# --- start ------------------------------------------------------------------------------------


async def test_start_counts_handler_starts(store_harness: StoreHarness) -> None:
    """Each start adds one attempt; later claims report the count."""
    store = store_harness.store
    token = await claimed_token(store_harness, "k")
    assert await store.start("k", token) == 1
    assert await store.start("k", token) == 2
    assert await store.release("k", token)
    answer = await claim(store_harness, "k")
    assert answer.attempts == 2
    assert answer.token is not None
    assert await store.start("k", answer.token) == 3


async def test_claim_alone_spends_no_attempt(store_harness: StoreHarness) -> None:
    """A claim that is released without a start leaves attempts at zero."""
    token = await claimed_token(store_harness, "k")
    assert await store_harness.store.release("k", token)
    assert (await claim(store_harness, "k")).attempts == 0


async def test_a_never_started_key_is_claimed_with_its_first_start_prepaid(
    store_harness: StoreHarness,
) -> None:
    """The claim of a key never started counts its first start: the claim says ``prepaid``
    with no attempts before it, and the first ``start`` confirms that start, counting no
    second one."""
    store = store_harness.store
    answer = await claim(store_harness, "k")
    assert answer.prepaid
    assert answer.attempts == 0
    assert answer.token is not None
    assert await store.start("k", answer.token) == 1
    assert await store.start("k", answer.token) == 2


async def test_a_start_after_an_attempt_ran_on_the_prepaid_start_counts(
    store_harness: StoreHarness,
) -> None:
    """``start(prepaid_used=True)``: the first attempt ran on the prepaid start with no
    ``start`` call, so the second attempt's start counts a second one."""
    store = store_harness.store
    token = await claimed_token(store_harness, "k")
    assert await store.start("k", token, prepaid_used=True) == 2
    assert await store.start("k", token) == 3


async def test_a_key_started_before_is_claimed_without_a_prepaid_start(
    store_harness: StoreHarness,
) -> None:
    """A key with starts counted is claimed with them and prepays nothing: its next start
    is counted by ``start``."""
    store = store_harness.store
    token = await claimed_token(store_harness, "k")
    assert await store.start("k", token) == 1
    assert await store.release("k", token)
    again = await claim(store_harness, "k")
    assert not again.prepaid
    assert again.attempts == 1
    assert again.token is not None
    assert await store.start("k", again.token) == 2


async def test_a_prepaid_start_the_handler_ran_on_stays_counted_after_release(
    store_harness: StoreHarness,
) -> None:
    """``release(started=True)`` keeps the prepaid start: the handler ran on it without a
    ``start`` call."""
    store = store_harness.store
    token = await claimed_token(store_harness, "k")
    assert await store.release("k", token, started=True)
    again = await claim(store_harness, "k")
    assert again.attempts == 1
    assert not again.prepaid


async def test_a_done_mark_confirms_the_prepaid_start(store_harness: StoreHarness) -> None:
    """A key completed without a ``start`` call reports the prepaid start as an attempt."""
    store = store_harness.store
    token = await claimed_token(store_harness, "k")
    assert await store.complete("k", token, Outcome.HANDLED, HASH, store_harness.ttl)
    answer = await claim(store_harness, "k")
    assert answer.status is ClaimStatus.DUPLICATE
    assert answer.attempts == 1


async def test_a_prepaid_start_of_an_expired_lease_is_uncertain(
    store_harness: StoreHarness,
) -> None:
    """A lease that expired on an unconfirmed prepaid start (a crash) leaves that start
    uncertain: the next claim reports the starts known to have happened (none) and prepays
    nothing, and its first ``start`` charges the uncertain one too."""
    store = store_harness.store
    await claimed_token(store_harness, "k")
    await store_harness.pass_time(store_harness.lease * 1.5)
    answer = await claim(store_harness, "k")
    assert answer.status is ClaimStatus.CLAIMED
    assert answer.attempts == 0
    assert not answer.prepaid
    assert answer.token is not None
    assert await store.start("k", answer.token) == 2
    assert await store.release("k", answer.token)
    assert (await claim(store_harness, "k")).attempts == 2


async def test_an_uncertain_start_is_kept_by_a_release_before_the_next_start(
    store_harness: StoreHarness,
) -> None:
    """A lease released before it started leaves an earlier lease's uncertain start as it
    was: only the lease that prepaid a start can take it back."""
    store = store_harness.store
    await claimed_token(store_harness, "k")
    await store_harness.pass_time(store_harness.lease * 1.5)
    token = await claimed_token(store_harness, "k")
    assert await store.release("k", token)
    answer = await claim(store_harness, "k")
    assert answer.attempts == 0
    assert answer.token is not None
    assert await store.start("k", answer.token) == 2


async def test_start_with_wrong_token_raises_lease_lost(store_harness: StoreHarness) -> None:
    """Starting with a token that does not hold the key raises LeaseLostError, counting nothing."""
    store = store_harness.store
    token = await claimed_token(store_harness, "k")
    with pytest.raises(LeaseLostError):
        await store.start("k", "not-the-token")
    assert await store.start("k", token) == 1


async def test_start_after_lease_expired_raises_lease_lost(store_harness: StoreHarness) -> None:
    """Starting after the lease expired raises LeaseLostError."""
    token = await claimed_token(store_harness, "k")
    await store_harness.pass_time(store_harness.lease * 1.5)
    with pytest.raises(LeaseLostError):
        await store_harness.store.start("k", token)


async def test_a_started_key_whose_lease_expired_refuses_its_old_token_everywhere(
    store_harness: StoreHarness,
) -> None:
    """A key that was started keeps its attempts after its lease ends, but the old token no
    longer starts, renews, completes or releases it, and a new claim takes it over."""
    store = store_harness.store
    token = await claimed_token(store_harness, "k")
    assert await store.start("k", token) == 1
    await store_harness.pass_time(store_harness.lease * 1.5)
    with pytest.raises(LeaseLostError):
        await store.start("k", token)
    assert not await store.renew("k", token, store_harness.lease)
    assert not await store.complete("k", token, Outcome.HANDLED, HASH, store_harness.ttl)
    assert not await store.release("k", token)
    taken_over = await claim(store_harness, "k")
    assert taken_over.status is ClaimStatus.CLAIMED
    assert taken_over.attempts == 1


async def test_a_start_late_in_the_lease_renews_it_to_the_length_it_was_claimed_for(
    store_harness: StoreHarness,
) -> None:
    """A key claimed ahead and started three quarters into its lease gets a whole lease from
    the start: three quarters of a lease later it still completes."""
    store = store_harness.store
    token = await claimed_token(store_harness, "k")
    await store_harness.pass_time(store_harness.lease * 0.75)
    assert await store.start("k", token) == 1
    await store_harness.pass_time(store_harness.lease * 0.75)
    assert await store.complete("k", token, Outcome.HANDLED, HASH, store_harness.ttl)


async def test_start_of_unknown_key_raises_lease_lost(store_harness: StoreHarness) -> None:
    """Starting a key that was never claimed raises LeaseLostError."""
    with pytest.raises(LeaseLostError):
        await store_harness.store.start("never-claimed", "token")


# --- complete ---------------------------------------------------------------------------------


async def test_complete_records_outcome_and_hash(store_harness: StoreHarness) -> None:
    """After complete, claims are DUPLICATE with the recorded outcome, hash and attempts."""
    await done(store_harness, "k", Outcome.HANDLED, HASH)
    answer = await claim(store_harness, "k")
    assert answer.status is ClaimStatus.DUPLICATE
    assert answer.outcome is Outcome.HANDLED
    assert answer.payload_hash == HASH
    assert answer.attempts == 1
    assert answer.token is None


async def test_dead_lettered_outcome_is_recorded(store_harness: StoreHarness) -> None:
    """A key completed as DEAD_LETTERED is a DUPLICATE with that outcome."""
    await done(store_harness, "k", Outcome.DEAD_LETTERED, OTHER_HASH)
    answer = await claim(store_harness, "k")
    assert answer.status is ClaimStatus.DUPLICATE
    assert answer.outcome is Outcome.DEAD_LETTERED
    assert answer.payload_hash == OTHER_HASH


async def test_complete_with_wrong_token_is_refused(store_harness: StoreHarness) -> None:
    """Complete with a token that does not hold the key is False and the key stays leased."""
    store = store_harness.store
    token = await claimed_token(store_harness, "k")
    assert not await store.complete("k", "not-the-token", Outcome.HANDLED, HASH, store_harness.ttl)
    assert (await claim(store_harness, "k")).status is ClaimStatus.BUSY
    assert await store.complete("k", token, Outcome.HANDLED, HASH, store_harness.ttl)


async def test_complete_of_unclaimed_key_is_refused(store_harness: StoreHarness) -> None:
    """Complete of a key nobody claimed is False and the key stays free."""
    store = store_harness.store
    assert not await store.complete("k", "token", Outcome.HANDLED, HASH, store_harness.ttl)
    assert (await claim(store_harness, "k")).status is ClaimStatus.CLAIMED


async def test_complete_after_takeover_is_refused(store_harness: StoreHarness) -> None:
    """A holder whose lease expired and was taken over cannot complete; the new holder can."""
    store = store_harness.store
    stale = await claimed_token(store_harness, "k")
    await store_harness.pass_time(store_harness.lease * 1.5)
    current = await claimed_token(store_harness, "k")
    assert not await store.complete("k", stale, Outcome.HANDLED, HASH, store_harness.ttl)
    assert (await claim(store_harness, "k")).status is ClaimStatus.BUSY
    assert await store.complete("k", current, Outcome.HANDLED, OTHER_HASH, store_harness.ttl)
    assert (await claim(store_harness, "k")).payload_hash == OTHER_HASH


async def test_complete_after_lease_expired_is_refused(store_harness: StoreHarness) -> None:
    """Complete after the lease expired is False and the key can be claimed again."""
    store = store_harness.store
    token = await claimed_token(store_harness, "k")
    await store_harness.pass_time(store_harness.lease * 1.5)
    assert not await store.complete("k", token, Outcome.HANDLED, HASH, store_harness.ttl)
    assert (await claim(store_harness, "k")).status is ClaimStatus.CLAIMED


async def test_complete_twice_is_refused(store_harness: StoreHarness) -> None:
    """A token that completed the key no longer holds it: a second complete is False."""
    store = store_harness.store
    token = await claimed_token(store_harness, "k")
    assert await store.complete("k", token, Outcome.HANDLED, HASH, store_harness.ttl)
    assert not await store.complete("k", token, Outcome.DEAD_LETTERED, HASH, store_harness.ttl)
    assert (await claim(store_harness, "k")).outcome is Outcome.HANDLED


@pytest.mark.parametrize("outcome", [Outcome.DUPLICATE, Outcome.SKIPPED, Outcome.DEFERRED])
async def test_complete_refuses_outcomes_not_recorded(
    store_harness: StoreHarness, outcome: Outcome
) -> None:
    """Only HANDLED and DEAD_LETTERED can be recorded; other outcomes raise ValueError."""
    store = store_harness.store
    token = await claimed_token(store_harness, "k")
    with pytest.raises(ValueError, match="handled or dead_lettered"):
        await store.complete("k", token, outcome, HASH, store_harness.ttl)
    assert (await claim(store_harness, "k")).status is ClaimStatus.BUSY


async def test_done_key_is_free_after_its_ttl(store_harness: StoreHarness) -> None:
    """A done key is DUPLICATE within its TTL and free again, attempts zero, after it."""
    await done(store_harness, "k")
    await store_harness.pass_time(store_harness.ttl * 0.5)
    assert (await claim(store_harness, "k")).status is ClaimStatus.DUPLICATE
    await store_harness.pass_time(store_harness.ttl)
    answer = await claim(store_harness, "k")
    assert answer.status is ClaimStatus.CLAIMED
    assert answer.attempts == 0


# --- settle: DONE marks and claims in one call -------------------------------------------------


def mark(
    harness: StoreHarness, key: str, token: str, outcome: Outcome = Outcome.HANDLED
) -> Completion:
    """A DONE mark of ``key`` with the harness's TTL."""
    return Completion(key, token, outcome, HASH, harness.ttl)


async def test_settle_writes_the_marks_before_it_claims(store_harness: StoreHarness) -> None:
    """``settle`` writes each mark first, so a key marked done in the call is a DUPLICATE
    of its own claim, and claims the others as ``claim`` would."""
    store = store_harness.store
    token = await claimed_token(store_harness, "done-now")
    settled = await store.settle(
        [mark(store_harness, "done-now", token, Outcome.DEAD_LETTERED)],
        [ClaimRequest("done-now"), ClaimRequest("free")],
        store_harness.lease,
    )
    assert settled.recorded == [True]
    first, second = settled.claims
    assert first.status is ClaimStatus.DUPLICATE
    assert first.outcome is Outcome.DEAD_LETTERED
    assert first.payload_hash == HASH
    assert second.status is ClaimStatus.CLAIMED
    assert second.prepaid


async def test_settle_refuses_the_mark_of_a_lost_lease_and_writes_the_rest(
    store_harness: StoreHarness,
) -> None:
    """A mark whose token no longer holds its key is refused (``False``), the marks beside it
    are written, and the key stays with the lease that holds it."""
    store = store_harness.store
    stale = await claimed_token(store_harness, "lost")
    await store_harness.pass_time(store_harness.lease * 1.5)
    holder = await claimed_token(store_harness, "lost")
    kept = await claimed_token(store_harness, "kept")
    settled = await store.settle(
        [mark(store_harness, "lost", stale), mark(store_harness, "kept", kept)],
        [],
        store_harness.lease,
    )
    assert settled.recorded == [False, True]
    assert settled.claims == []
    assert (await claim(store_harness, "lost")).status is ClaimStatus.BUSY
    assert (await claim(store_harness, "kept")).status is ClaimStatus.DUPLICATE
    assert await store.complete("lost", holder, Outcome.HANDLED, HASH, store_harness.ttl)


async def test_settle_keeps_each_claims_replay_id_and_each_marks_fields_apart(
    store_harness: StoreHarness,
) -> None:
    """Replays and originals mixed in one call each get their own answer, and marks with an
    empty payload hash or a foreign token with a space in it are read field by field: the
    empty hash is recorded, the foreign token is refused as lost."""
    store = store_harness.store
    for key in ("replayed-a", "replayed-b"):
        token = await claimed_token(store_harness, key)
        await store.complete(key, token, Outcome.DEAD_LETTERED, HASH, store_harness.ttl)
    empty = await claimed_token(store_harness, "empty-hash")
    held = await claimed_token(store_harness, "held")
    settled = await store.settle(
        [
            Completion("empty-hash", empty, Outcome.HANDLED, "", store_harness.ttl),
            Completion("held", held + " forged", Outcome.HANDLED, HASH, store_harness.ttl),
        ],
        [
            ClaimRequest("replayed-a", "replay one"),
            ClaimRequest("fresh"),
            ClaimRequest("replayed-b", "+-replay two"),
            ClaimRequest("replayed-a"),
        ],
        store_harness.lease,
    )
    assert settled.recorded == [True, False]
    statuses = [answer.status for answer in settled.claims]
    assert statuses == [
        ClaimStatus.CLAIMED,
        ClaimStatus.CLAIMED,
        ClaimStatus.CLAIMED,
        ClaimStatus.BUSY,
    ]
    duplicate = await claim(store_harness, "empty-hash")
    assert duplicate.status is ClaimStatus.DUPLICATE
    assert duplicate.payload_hash == ""
    assert (await claim(store_harness, "held")).status is ClaimStatus.BUSY
    first_replay = settled.claims[0].token
    assert first_replay is not None
    # dead-lettered again under its own replay id: that id, and only that one, is spent
    await store.complete("replayed-a", first_replay, Outcome.DEAD_LETTERED, HASH, store_harness.ttl)
    again = await claim(store_harness, "replayed-a", replay_id="replay one")
    assert again.status is ClaimStatus.DUPLICATE
    assert (await claim(store_harness, "replayed-a", replay_id="+-replay two")).status is (
        ClaimStatus.CLAIMED
    )
    assert (await claim(store_harness, "replayed-b", replay_id="+-replay two")).status is (
        ClaimStatus.BUSY
    )


async def test_settle_with_nothing_to_do_answers_nothing(store_harness: StoreHarness) -> None:
    """An empty ``settle`` writes and claims nothing."""
    settled = await store_harness.store.settle([], [], store_harness.lease)
    assert settled.recorded == []
    assert settled.claims == []


async def test_settle_refuses_a_mark_with_an_outcome_not_recorded_writing_nothing(
    store_harness: StoreHarness,
) -> None:
    """A mark ``complete`` would refuse makes the whole call a ``ValueError``: the good mark
    beside it is not written either."""
    store = store_harness.store
    good = await claimed_token(store_harness, "good")
    bad = await claimed_token(store_harness, "bad")
    with pytest.raises(ValueError, match="handled or dead_lettered"):
        await store.settle(
            [mark(store_harness, "good", good), mark(store_harness, "bad", bad, Outcome.DEFERRED)],
            [],
            store_harness.lease,
        )
    assert (await claim(store_harness, "good")).status is ClaimStatus.BUSY


# --- release ----------------------------------------------------------------------------------


async def test_release_frees_the_key(store_harness: StoreHarness) -> None:
    """After release the next claim is CLAIMED at once, with the attempts kept."""
    store = store_harness.store
    token = await claimed_token(store_harness, "k")
    await store.start("k", token)
    assert await store.release("k", token)
    answer = await claim(store_harness, "k")
    assert answer.status is ClaimStatus.CLAIMED
    assert answer.attempts == 1


async def test_release_with_wrong_token_is_refused(store_harness: StoreHarness) -> None:
    """Release with a token that does not hold the key is False and the lease still holds."""
    store = store_harness.store
    token = await claimed_token(store_harness, "k")
    assert not await store.release("k", "not-the-token")
    assert (await claim(store_harness, "k")).status is ClaimStatus.BUSY
    assert await store.release("k", token)


async def test_released_token_no_longer_works(store_harness: StoreHarness) -> None:
    """After release the old token can neither start, renew, complete nor release."""
    store = store_harness.store
    token = await claimed_token(store_harness, "k")
    assert await store.release("k", token)
    with pytest.raises(LeaseLostError):
        await store.start("k", token)
    assert not await store.renew("k", token, store_harness.lease)
    assert not await store.complete("k", token, Outcome.HANDLED, HASH, store_harness.ttl)
    assert not await store.release("k", token)


# --- renew ------------------------------------------------------------------------------------


async def test_renew_extends_the_lease(store_harness: StoreHarness) -> None:
    """A renewed lease keeps the key BUSY past the original lease, and its token still works."""
    store = store_harness.store
    token = await claimed_token(store_harness, "k")
    await store_harness.pass_time(store_harness.lease * 0.75)
    assert await store.renew("k", token, store_harness.lease)
    await store_harness.pass_time(store_harness.lease * 0.75)
    assert (await claim(store_harness, "k")).status is ClaimStatus.BUSY
    assert await store.complete("k", token, Outcome.HANDLED, HASH, store_harness.ttl)


async def test_renew_with_wrong_token_is_refused(store_harness: StoreHarness) -> None:
    """Renew with a wrong token is False and does not extend the lease."""
    store = store_harness.store
    await claimed_token(store_harness, "k")
    await store_harness.pass_time(store_harness.lease * 0.75)
    assert not await store.renew("k", "not-the-token", store_harness.lease)
    await store_harness.pass_time(store_harness.lease * 0.75)
    assert (await claim(store_harness, "k")).status is ClaimStatus.CLAIMED


async def test_renew_after_lease_expired_is_refused(store_harness: StoreHarness) -> None:
    """A lease that expired cannot be renewed back to life."""
    token = await claimed_token(store_harness, "k")
    await store_harness.pass_time(store_harness.lease * 1.5)
    assert not await store_harness.store.renew("k", token, store_harness.lease)


# --- replay -----------------------------------------------------------------------------------


async def test_replay_claims_dead_lettered_key_once_per_id(store_harness: StoreHarness) -> None:
    """A replay id claims a dead-lettered key once; done, it is DUPLICATE; a new id claims."""
    store = store_harness.store
    await done(store_harness, "k", Outcome.DEAD_LETTERED)
    replay = await claim(store_harness, "k", replay_id="r1")
    assert replay.status is ClaimStatus.CLAIMED
    assert replay.attempts == 0
    assert replay.token is not None
    assert await store.complete("k", replay.token, Outcome.DEAD_LETTERED, HASH, store_harness.ttl)
    again = await claim(store_harness, "k", replay_id="r1")
    assert again.status is ClaimStatus.DUPLICATE
    assert again.outcome is Outcome.DEAD_LETTERED
    assert (await claim(store_harness, "k", replay_id="r2")).status is ClaimStatus.CLAIMED


async def test_replay_that_handles_ends_replays(store_harness: StoreHarness) -> None:
    """Once a replay completes HANDLED, no replay id claims the key again."""
    await done(store_harness, "k", Outcome.DEAD_LETTERED)
    token = await claimed_token(store_harness, "k", replay_id="r1")
    assert await store_harness.store.complete("k", token, Outcome.HANDLED, HASH, store_harness.ttl)
    answer = await claim(store_harness, "k", replay_id="r2")
    assert answer.status is ClaimStatus.DUPLICATE
    assert answer.outcome is Outcome.HANDLED


async def test_replay_never_reclaims_handled_key(store_harness: StoreHarness) -> None:
    """A key done as HANDLED is DUPLICATE even for a replay id."""
    await done(store_harness, "k", Outcome.HANDLED)
    answer = await claim(store_harness, "k", replay_id="r1")
    assert answer.status is ClaimStatus.DUPLICATE
    assert answer.outcome is Outcome.HANDLED


async def test_dead_lettered_key_is_duplicate_without_replay_id(
    store_harness: StoreHarness,
) -> None:
    """A redelivered original of a dead-lettered key (no replay id) is DUPLICATE."""
    await done(store_harness, "k", Outcome.DEAD_LETTERED)
    assert (await claim(store_harness, "k")).status is ClaimStatus.DUPLICATE


async def test_replay_lease_makes_others_busy(store_harness: StoreHarness) -> None:
    """While a replay holds the key, other claims, replays or not, are BUSY."""
    await done(store_harness, "k", Outcome.DEAD_LETTERED)
    await claimed_token(store_harness, "k", replay_id="r1")
    assert (await claim(store_harness, "k")).status is ClaimStatus.BUSY
    assert (await claim(store_harness, "k", replay_id="r2")).status is ClaimStatus.BUSY


async def test_released_replay_leaves_key_dead_lettered(store_harness: StoreHarness) -> None:
    """A replay that releases leaves the key DUPLICATE dead-lettered; its id may claim again."""
    store = store_harness.store
    await done(store_harness, "k", Outcome.DEAD_LETTERED)
    token = await claimed_token(store_harness, "k", replay_id="r1")
    assert await store.start("k", token) == 1
    assert await store.release("k", token)
    answer = await claim(store_harness, "k")
    assert answer.status is ClaimStatus.DUPLICATE
    assert answer.outcome is Outcome.DEAD_LETTERED
    retry = await claim(store_harness, "k", replay_id="r1")
    assert retry.status is ClaimStatus.CLAIMED
    assert retry.attempts == 1


async def test_crashed_replay_keeps_its_attempts(store_harness: StoreHarness) -> None:
    """A replay whose lease expired is taken over by the same replay id with attempts kept."""
    store = store_harness.store
    await done(store_harness, "k", Outcome.DEAD_LETTERED)
    token = await claimed_token(store_harness, "k", replay_id="r1")
    assert await store.start("k", token) == 1
    await store_harness.pass_time(store_harness.lease * 1.5)
    assert (await claim(store_harness, "k")).status is ClaimStatus.DUPLICATE
    assert (await claim(store_harness, "k", replay_id="r1")).attempts == 1


# --- complete with effects (atomic-effect mode) ---------------------------------------------


def effects_store(harness: StoreHarness) -> EffectsStore:
    """The harness's store as an ``EffectsStore``: both adapters support effects."""
    store = harness.store
    assert isinstance(store, InMemoryIdempotencyStore | RedisIdempotencyStore)
    assert store.supports_effects
    return store


class Keyspace:
    """Reads back what staged writes left, from Redis or from the in-memory target."""

    def __init__(self, harness: StoreHarness) -> None:
        self._store = harness.store

    async def get(self, key: str) -> bytes | None:
        if isinstance(self._store, InMemoryIdempotencyStore):
            return self._store.effects_target.get(key)
        assert isinstance(self._store, RedisIdempotencyStore)
        return cast("bytes | None", await self._store.client.get(key))

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        if isinstance(self._store, InMemoryIdempotencyStore):
            return self._store.effects_target.hgetall(key)
        assert isinstance(self._store, RedisIdempotencyStore)
        return cast("dict[bytes, bytes]", await self._store.client.hgetall(key))

    async def smembers(self, key: str) -> set[bytes]:
        if isinstance(self._store, InMemoryIdempotencyStore):
            return self._store.effects_target.smembers(key)
        assert isinstance(self._store, RedisIdempotencyStore)
        return cast("set[bytes]", await self._store.client.smembers(key))

    async def lrange(self, key: str) -> list[bytes]:
        if isinstance(self._store, InMemoryIdempotencyStore):
            return self._store.effects_target.lrange(key)
        assert isinstance(self._store, RedisIdempotencyStore)
        return cast("list[bytes]", await self._store.client.lrange(key, 0, -1))

    async def ttl(self, key: str) -> float | None:
        if isinstance(self._store, InMemoryIdempotencyStore):
            return self._store.effects_target.ttl(key)
        assert isinstance(self._store, RedisIdempotencyStore)
        ms = await self._store.client.pttl(key)
        return ms / 1000 if ms >= 0 else None


def counting(amount: int = 1) -> tuple[Effect, ...]:
    """Writes that count one event."""
    effects = RedisEffects()
    effects.incrby("count", amount)
    effects.sadd("seen", "e1")
    return effects.seal()


async def seed(harness: StoreHarness, effects: RedisEffects) -> None:
    """Write ``effects`` through a key of their own, so tests start from given data."""
    token = await claimed_token(harness, "seed")
    assert await effects_store(harness).complete_with_effects(
        "seed", token, HASH, harness.ttl, effects.seal()
    )


async def test_complete_with_effects_applies_the_writes_and_marks_done(
    store_harness: StoreHarness,
) -> None:
    """The writes land exactly when DONE is written: the key is then a handled duplicate."""
    store = effects_store(store_harness)
    token = await claimed_token(store_harness, "k")
    await store.start("k", token)
    assert await store.complete_with_effects("k", token, HASH, store_harness.ttl, counting())
    keys = Keyspace(store_harness)
    assert await keys.get("count") == b"1"
    assert await keys.smembers("seen") == {b"e1"}
    answer = await claim(store_harness, "k")
    assert answer.status is ClaimStatus.DUPLICATE
    assert answer.outcome is Outcome.HANDLED
    assert answer.payload_hash == HASH


async def test_complete_with_effects_after_takeover_applies_nothing(
    store_harness: StoreHarness,
) -> None:
    """A stale token (its lease expired and was taken over) writes nothing, returns False."""
    store = effects_store(store_harness)
    stale = await claimed_token(store_harness, "k")
    await store_harness.pass_time(store_harness.lease * 1.5)
    fresh = await claimed_token(store_harness, "k")
    assert not await store.complete_with_effects("k", stale, HASH, store_harness.ttl, counting())
    assert await Keyspace(store_harness).get("count") is None
    assert await store.complete_with_effects("k", fresh, HASH, store_harness.ttl, counting())
    assert await Keyspace(store_harness).get("count") == b"1"


async def test_complete_with_effects_after_the_lease_expired_applies_nothing(
    store_harness: StoreHarness,
) -> None:
    """An expired lease nobody took over still refuses its token: nothing applied."""
    store = effects_store(store_harness)
    token = await claimed_token(store_harness, "k")
    await store_harness.pass_time(store_harness.lease * 1.5)
    assert not await store.complete_with_effects("k", token, HASH, store_harness.ttl, counting())
    assert await Keyspace(store_harness).get("count") is None
    assert (await claim(store_harness, "k")).status is ClaimStatus.CLAIMED


async def test_complete_with_effects_twice_applies_once(store_harness: StoreHarness) -> None:
    """A repeated call (a reply lost, the call sent again) finds the key done: no second write."""
    store = effects_store(store_harness)
    token = await claimed_token(store_harness, "k")
    assert await store.complete_with_effects("k", token, HASH, store_harness.ttl, counting())
    assert not await store.complete_with_effects("k", token, HASH, store_harness.ttl, counting())
    assert await Keyspace(store_harness).get("count") == b"1"


async def test_writes_of_a_released_lease_never_land(store_harness: StoreHarness) -> None:
    """A failed attempt releases its lease: its token can no longer apply its writes."""
    store = effects_store(store_harness)
    token = await claimed_token(store_harness, "k")
    await store.start("k", token)
    assert await store.release("k", token)
    assert not await store.complete_with_effects("k", token, HASH, store_harness.ttl, counting())
    assert await Keyspace(store_harness).get("count") is None


async def test_a_write_that_cannot_apply_refuses_the_whole_batch(
    store_harness: StoreHarness,
) -> None:
    """An INCRBY of a non-integer late in the batch: no earlier write lands, the lease holds."""
    given = RedisEffects()
    given.set("name", "not a number")
    given.hset("table", {"f": "v"})
    await seed(store_harness, given)
    store = effects_store(store_harness)
    token = await claimed_token(store_harness, "k")
    for bad in ("INCRBY", "SADD"):
        effects = RedisEffects()
        effects.set("first", "x")
        effects.incrby("count")
        if bad == "INCRBY":
            effects.incrby("name")
        else:
            effects.sadd("table", "m")  # a hash is no set
        with pytest.raises(EffectsRefusedError):
            await store.complete_with_effects("k", token, HASH, store_harness.ttl, effects.seal())
    keys = Keyspace(store_harness)
    assert await keys.get("first") is None
    assert await keys.get("count") is None
    assert await store.complete_with_effects("k", token, HASH, store_harness.ttl, counting())
    assert await keys.get("count") == b"1"


async def test_a_command_not_allowed_is_refused_before_anything_runs(
    store_harness: StoreHarness,
) -> None:
    """Only the documented write commands pass: anything else is refused, nothing applied."""
    store = effects_store(store_harness)
    token = await claimed_token(store_harness, "k")
    effects = [*counting(), Effect("FLUSHALL", "count"), Effect("EVAL", "count", (b"return 1",))]
    with pytest.raises(EffectsRefusedError, match="FLUSHALL"):
        await store.complete_with_effects("k", token, HASH, store_harness.ttl, effects)
    with pytest.raises(EffectsRefusedError, match="malformed"):
        await store.complete_with_effects(
            "k", token, HASH, store_harness.ttl, [Effect("INCRBY", "count", (b"1.5",))]
        )
    assert await Keyspace(store_harness).get("count") is None
    # the lease holds: the same token then applies well-formed writes
    assert await store.complete_with_effects("k", token, HASH, store_harness.ttl, counting())


async def test_staged_commands_write_what_redis_writes(store_harness: StoreHarness) -> None:
    """Each allowed command, in order, each seeing the earlier writes of its batch."""
    given = RedisEffects()
    given.set("gone", "x")
    given.set("string-then-hash", "x")
    given.hset("h", {"a": "1", "b": "2"})
    await seed(store_harness, given)
    effects = RedisEffects()
    effects.set("s", "5")
    effects.incrby("s", -7)
    effects.set("temp", b"\x00bytes", ttl=store_harness.ttl)
    effects.set("later", "v")
    effects.expire("later", store_harness.ttl)
    effects.delete("gone")
    effects.delete("string-then-hash")
    effects.hset("string-then-hash", {"f": "1"})
    effects.hincrby("h", "a", 41)
    effects.hincrby("h", "new", 2)
    effects.hdel("h", "b")
    effects.sadd("set", "x", "y", "z")
    effects.srem("set", "y")
    effects.rpush("list", "1", "2")
    effects.lpush("list", "0", "-1")
    store = effects_store(store_harness)
    token = await claimed_token(store_harness, "k")
    assert await store.complete_with_effects("k", token, HASH, store_harness.ttl, effects.seal())
    keys = Keyspace(store_harness)
    assert await keys.get("s") == b"-2"
    assert await keys.get("temp") == b"\x00bytes"
    assert await keys.get("gone") is None
    assert await keys.hgetall("string-then-hash") == {b"f": b"1"}
    assert await keys.hgetall("h") == {b"a": b"42", b"new": b"2"}
    assert await keys.smembers("set") == {b"x", b"z"}
    assert await keys.lrange("list") == [b"-1", b"0", b"1", b"2"]
    for key in ("temp", "later"):
        ttl = await keys.ttl(key)
        assert ttl is not None
        assert 0 < ttl <= store_harness.ttl
    assert await keys.ttl("s") is None


async def test_counters_beyond_the_exact_range_are_refused(store_harness: StoreHarness) -> None:
    """A counter leaving +/-(2**53 - 1) is refused whole: a script cannot add it exactly."""
    store = effects_store(store_harness)
    token = await claimed_token(store_harness, "k")
    effects = RedisEffects()
    effects.incrby("count", MAX_SAFE_INTEGER)
    effects.incrby("count", 1)
    with pytest.raises(EffectsRefusedError):
        await store.complete_with_effects("k", token, HASH, store_harness.ttl, effects.seal())
    assert await Keyspace(store_harness).get("count") is None


# --- the in-memory adapter's own seams (not part of the port) ---------------------------------


def memory_store() -> tuple[InMemoryIdempotencyStore, FakeClock]:
    """An in-memory store on a fake clock."""
    clock = FakeClock()
    return InMemoryIdempotencyStore(clock, attempts_ttl_seconds=100.0, sweep_every=4), clock


async def test_memory_store_forgets_expired_entries() -> None:
    """Expired leases, released keys and done keys past their TTL are dropped from memory."""
    store, clock = memory_store()
    claims = await store.claim([ClaimRequest(f"k{i}") for i in range(3)], 10.0)
    tokens = [answer.token for answer in claims]
    assert all(tokens)
    assert await store.start("k0", str(tokens[0])) == 1
    assert await store.release("k0", str(tokens[0]))
    assert await store.complete("k1", str(tokens[1]), Outcome.HANDLED, HASH, 50.0)
    assert len(store) == 3
    clock.advance(20.0)  # k2's lease expired on an unconfirmed prepaid start: it is kept
    assert len(store) == 3
    clock.advance(40.0)  # k1's done TTL passed
    assert len(store) == 2
    clock.advance(100.0)  # k0's and k2's attempts are kept no longer
    assert len(store) == 0


async def test_memory_store_sweeps_while_claiming() -> None:
    """Claims purge expired entries every few calls, so memory stays bounded."""
    store, clock = memory_store()
    for round_ in range(50):
        await store.claim([ClaimRequest(f"k{round_}")], 1.0)
        # past the lease and the attempts TTL: even an uncertain prepaid start is gone
        clock.advance(102.0)
    # the raw table, since len() itself purges: only the sweep keeps this one small
    assert len(store._entries) < 8


async def test_memory_store_released_key_without_attempts_is_forgotten() -> None:
    """A key released before any start leaves nothing behind."""
    store, _ = memory_store()
    token = (await store.claim([ClaimRequest("k")], 10.0))[0].token
    assert await store.release("k", str(token))
    assert len(store) == 0


async def test_memory_store_unavailable_switch_fails_every_call() -> None:
    """``set_unavailable(True)`` makes every call raise StoreUnavailableError until switched off."""
    store, _ = memory_store()
    token = str((await store.claim([ClaimRequest("k")], 10.0))[0].token)
    store.set_unavailable(True)
    with pytest.raises(StoreUnavailableError):
        await store.claim([ClaimRequest("k")], 10.0)
    with pytest.raises(StoreUnavailableError):
        await store.start("k", token)
    with pytest.raises(StoreUnavailableError):
        await store.renew("k", token, 10.0)
    with pytest.raises(StoreUnavailableError):
        await store.complete("k", token, Outcome.HANDLED, HASH, 10.0)
    with pytest.raises(StoreUnavailableError):
        await store.release("k", token)
    store.set_unavailable(False)
    assert await store.complete("k", token, Outcome.HANDLED, HASH, 10.0)


@pytest.mark.parametrize("seconds", [0.0, -1.0])
async def test_memory_store_refuses_non_positive_durations(seconds: float) -> None:
    """Leases and TTLs must be positive; zero or negative raises ValueError."""
    store, _ = memory_store()
    with pytest.raises(ValueError, match="lease_seconds"):
        await store.claim([ClaimRequest("k")], seconds)
    token = str((await store.claim([ClaimRequest("k")], 10.0))[0].token)
    with pytest.raises(ValueError, match="lease_seconds"):
        await store.renew("k", token, seconds)
    with pytest.raises(ValueError, match="ttl_seconds"):
        await store.complete("k", token, Outcome.HANDLED, HASH, seconds)


async def test_memory_store_defaults_to_the_system_clock() -> None:
    """Without a clock the store runs on real time: a fresh lease is BUSY for about its length."""
    store = InMemoryIdempotencyStore()
    await store.claim([ClaimRequest("k")], 60.0)
    (answer,) = await store.claim([ClaimRequest("k")], 60.0)
    assert answer.status is ClaimStatus.BUSY
    assert 50.0 < answer.retry_after <= 60.0


@pytest.mark.parametrize(
    ("attempts_ttl_seconds", "sweep_every", "message"),
    [(0.0, 10, "attempts_ttl_seconds"), (10.0, 0, "sweep_every")],
)
def test_memory_store_refuses_bad_settings(
    attempts_ttl_seconds: float, sweep_every: int, message: str
) -> None:
    """A non-positive attempts TTL or sweep interval raises ValueError at construction."""
    with pytest.raises(ValueError, match=message):
        InMemoryIdempotencyStore(
            FakeClock(), attempts_ttl_seconds=attempts_ttl_seconds, sweep_every=sweep_every
        )
