"""The built-in middlewares of the record path, in the order the chain runs them.

observe -> dead_letter -> route | decode -> idempotency -> dead_letter -> retry -> timeout
-> handler
"""

from __future__ import annotations
