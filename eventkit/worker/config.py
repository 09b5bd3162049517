"""``WorkerConfig``: the knobs of the consume loop (the transport's own live in its settings)."""

from __future__ import annotations

from dataclasses import dataclass

from eventkit.errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Timing and bounds of fetching, buffering, deferring, committing and draining.

    ``max_buffered`` records per partition are held before the partition is paused (the
    fetch loop keeps polling); it resumes below half of that. Commits happen every
    ``commit_interval`` seconds or ``commit_every`` finished records, whichever comes first,
    one at a time, each bounded by ``commit_timeout``. At most ``max_in_flight`` records run
    at once over all partitions; a key-ordered partition runs up to ``key_concurrency``
    records (of different keys) at once.
    """

    poll_timeout: float = 0.2
    max_records: int = 500
    max_buffered: int = 2000
    commit_interval: float = 1.0
    commit_every: int = 5000
    commit_timeout: float = 10.0
    drain_timeout: float = 30.0
    revoke_drain_timeout: float = 10.0
    defer_base_delay: float = 0.5
    defer_max_delay: float = 30.0
    max_in_flight: int = 256
    key_concurrency: int = 16

    def __post_init__(self) -> None:
        for name in (
            "poll_timeout",
            "commit_interval",
            "commit_timeout",
            "drain_timeout",
            "revoke_drain_timeout",
            "defer_base_delay",
            "defer_max_delay",
        ):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"WorkerConfig.{name} must be positive")
        for name in (
            "max_records",
            "max_buffered",
            "commit_every",
            "max_in_flight",
            "key_concurrency",
        ):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"WorkerConfig.{name} must be at least 1")

    def defer_delay(self, consecutive: int) -> float:
        """The wait before deferred attempt ``consecutive`` (1-based): doubling, capped."""
        return min(self.defer_max_delay, self.defer_base_delay * 2.0 ** min(consecutive - 1, 32))
