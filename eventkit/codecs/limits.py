"""Bounds on what a record may carry (input hygiene); exceeding one makes the record poison."""

from __future__ import annotations

from dataclasses import dataclass

from eventkit.errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Size bounds checked before anything is decoded."""

    max_record_bytes: int = 1024 * 1024
    max_header_count: int = 64
    max_header_bytes: int = 16 * 1024
    max_event_id_length: int = 128

    def __post_init__(self) -> None:
        for name in (
            "max_record_bytes",
            "max_header_count",
            "max_header_bytes",
            "max_event_id_length",
        ):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"DecodeLimits.{name} must be positive")
