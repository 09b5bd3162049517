"""Named crash points: a test-only hook that makes the worker process exit exactly there.

Rare windows (a record finished but not committed, a revoke half drained) are tested on
purpose by setting ``EVENTKIT_CRASH_POINT=<name>`` in a worker's environment: the process then
dies with ``os._exit`` (no cleanup, like kill -9) the first time it reaches that point.
Unset, ``crash_point`` is one comparison.
"""

from __future__ import annotations

import os
import sys

#: Every named point, with where it is.
KNOWN_POINTS = {
    "after_claim": "idempotency claims were granted, before any of their handlers started",
    "before_done": "a handler returned (or its record was dead-lettered), before its DONE "
    "mark and staged effects are written",
    "after_done": "a DONE mark (with its staged effects) was written, before the record's "
    "offset is committed",
    "before_commit": "records finished and a commit of them is about to be sent",
    "revoke_drain": "a revoke is draining records still in flight",
}

#: The exit status of a process that stopped at a crash point.
CRASH_EXIT_CODE = 86

_armed = os.environ.get("EVENTKIT_CRASH_POINT") or None
if _armed is not None and _armed not in KNOWN_POINTS:
    raise RuntimeError(f"EVENTKIT_CRASH_POINT={_armed!r} names no crash point")

#: The armed point, if any: hot paths test this once instead of calling ``crash_point``.
ARMED = _armed


def crash_point(name: str) -> None:
    """Exit the process at once if ``name`` is the armed crash point."""
    if _armed == name:
        sys.stderr.write(f"eventkit: crash point {name} reached\n")
        sys.stderr.flush()
        os._exit(CRASH_EXIT_CODE)
