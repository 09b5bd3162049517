"""The built-in middlewares of the record path, in the order the chain runs them.

(observe) -> entry: route, decode, settle, count -> (user middlewares) -> idempotency ->
retry, which dead-letters what it gives up on -> timeout -> handler
"""

from __future__ import annotations
