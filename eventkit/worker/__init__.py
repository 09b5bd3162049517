"""The consume loop: fetching, partition lanes, commits, rebalances and draining."""

from __future__ import annotations

from eventkit.worker.config import WorkerConfig
from eventkit.worker.worker import Worker

__all__ = ["Worker", "WorkerConfig"]
