"""What happened to one record: the only thing a middleware chain returns."""

from __future__ import annotations

import enum


class Outcome(enum.Enum):
    """The result of running one record through the chain.

    Final outcomes let the offset move past the record; ``DEFERRED`` keeps it unfinished, its
    partition pauses, and the record is tried again later.
    """

    HANDLED = "handled"
    DUPLICATE = "duplicate"
    SKIPPED = "skipped"
    DEAD_LETTERED = "dead_lettered"
    DEFERRED = "deferred"

    # members are singletons: identity hashing is exact and skips Enum's Python-level hash
    __hash__ = object.__hash__

    @property
    def is_final(self) -> bool:
        """Whether the record is finished and its offset may be committed past."""
        return self is not Outcome.DEFERRED
