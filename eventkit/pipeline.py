"""The one middleware shape, and ``compose`` that folds a list of them around a handler.

A ``Next`` takes a ``Delivery`` and returns its ``Outcome``; a ``Middleware`` wraps a ``Next``
in another ``Next``. Middlewares never commit or acknowledge: they turn what happened into an
outcome, and the worker owns offsets.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeAlias

from eventkit.delivery import Delivery
from eventkit.outcomes import Outcome

Next: TypeAlias = Callable[[Delivery], Awaitable[Outcome]]
Middleware: TypeAlias = Callable[[Next], Next]


def compose(middlewares: Sequence[Middleware], handler: Next) -> Next:
    """Wrap ``handler`` so that ``middlewares[0]`` runs first and the handler runs last."""
    composed = handler
    for middleware in reversed(middlewares):
        composed = middleware(composed)
    return composed
