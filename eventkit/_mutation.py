"""Planted bugs, switched on only by tests, that prove the reliability tests can fail.

A test suite that passes against a broken dispatcher proves nothing; each planted bug below is
a known way to break the contract, and the tests are run against each one to see them fail.
``EVENTKIT_PLANTED_BUGS`` (comma separated) switches them on in a child process; ``planted``
does so inside one test. Production code only ever reads ``is_planted``.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

#: Every planted bug, with what it breaks.
KNOWN_BUGS = {
    "busy_as_duplicate": "the store answers DUPLICATE where another live lease holds the key",
    "complete_without_token_check": "complete marks a key done whatever the token",
    "effects_without_token_check": (
        "an atomic-effect DONE that lost its lease applies the handler's writes anyway"
    ),
    "release_keeps_prepaid_start": (
        "a release keeps the claim's prepaid start although no handler ran on it"
    ),
    "commit_last_finished": "the offset tracker commits past the last finished record",
    "bare_commit": "the worker commits everything fetched, as a bare commit() does",
    "commit_before_finish": "a lane marks a record finished before its handler ran",
    "drop_on_pause": "a lane pausing for backpressure drops the records it has no room for",
}

_active: set[str] = {
    name for name in os.environ.get("EVENTKIT_PLANTED_BUGS", "").split(",") if name
}


def is_planted(name: str) -> bool:
    """Whether the named bug is switched on (always ``False`` outside the mutation tests)."""
    return name in _active


@contextmanager
def planted(name: str) -> Iterator[None]:
    """Switch one planted bug on for the duration of the block."""
    if name not in KNOWN_BUGS:
        raise ValueError(f"unknown planted bug {name!r}")
    _active.add(name)
    try:
        yield
    finally:
        _active.discard(name)
