"""The store contract suite fails against each planted store bug, and only in the tests expected.

Each run is a child pytest with ``EVENTKIT_PLANTED_BUGS`` set, since planted bugs are read from
the environment at import. The whole suite runs (no ``-x``) so the exact set of catching tests
is pinned: a test that stops catching a bug shows up here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SUITE = "tests/contract/test_idempotency_store.py"
FAILED_LINE = re.compile(r"^FAILED " + re.escape(SUITE) + r"::(\w+)", re.MULTILINE)

#: For each planted store bug, the contract tests that must catch it (adapter ids stripped).
CATCHING_TESTS = {
    "busy_as_duplicate": {
        "test_claim_while_leased_is_busy_never_duplicate",
        "test_busy_retry_after_counts_down",
        "test_same_key_twice_in_one_batch_is_busy_second",
        "test_batch_claim_answers_in_request_order",
        "test_complete_with_wrong_token_is_refused",
        "test_complete_after_takeover_is_refused",
        "test_complete_refuses_outcomes_not_recorded",
        "test_release_with_wrong_token_is_refused",
        "test_renew_extends_the_lease",
        "test_replay_lease_makes_others_busy",
        "test_memory_store_defaults_to_the_system_clock",
        "test_settle_refuses_a_mark_with_an_outcome_not_recorded_writing_nothing",
        "test_settle_refuses_the_mark_of_a_lost_lease_and_writes_the_rest",
        "test_settle_keeps_each_claims_replay_id_and_each_marks_fields_apart",
    },
    "complete_without_token_check": {
        "test_complete_with_wrong_token_is_refused",
        "test_complete_of_unclaimed_key_is_refused",
        "test_complete_after_takeover_is_refused",
        "test_complete_after_lease_expired_is_refused",
        "test_complete_twice_is_refused",
        "test_released_token_no_longer_works",
        "test_a_started_key_whose_lease_expired_refuses_its_old_token_everywhere",
        "test_settle_refuses_the_mark_of_a_lost_lease_and_writes_the_rest",
        "test_settle_keeps_each_claims_replay_id_and_each_marks_fields_apart",
    },
    "effects_without_token_check": {
        "test_complete_with_effects_after_takeover_applies_nothing",
        "test_complete_with_effects_after_the_lease_expired_applies_nothing",
        "test_complete_with_effects_twice_applies_once",
        "test_writes_of_a_released_lease_never_land",
    },
    "release_keeps_prepaid_start": {
        "test_claim_alone_spends_no_attempt",
        "test_memory_store_released_key_without_attempts_is_forgotten",
    },
}


def run_store_contract(planted_bugs: str) -> tuple[int, set[str], str]:
    """Run the store contract suite in a child pytest; exit code, failed test names, output."""
    env = {**os.environ, "EVENTKIT_PLANTED_BUGS": planted_bugs}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", SUITE, "-q", "-rf", "-p", "no:cacheprovider"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    output = result.stdout + result.stderr
    return result.returncode, set(FAILED_LINE.findall(output)), output


@pytest.mark.slow
@pytest.mark.parametrize("bug", sorted(CATCHING_TESTS))
def test_store_contract_catches_planted_bug(bug: str) -> None:
    """With a planted store bug the contract suite fails, in exactly the tests expected."""
    returncode, failed, output = run_store_contract(bug)
    assert returncode == pytest.ExitCode.TESTS_FAILED, output
    assert failed == CATCHING_TESTS[bug], output


@pytest.mark.slow
def test_store_contract_passes_without_planted_bugs() -> None:
    """Without planted bugs the same child run of the contract suite passes."""
    returncode, failed, output = run_store_contract("")
    assert returncode == pytest.ExitCode.OK, output
    assert failed == set()
