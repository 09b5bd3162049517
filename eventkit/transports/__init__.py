"""Transports: adapters of the ``Consumer`` and ``Publisher`` ports (in memory, Kafka)."""

from __future__ import annotations

from eventkit.transports.url import Transport, connect, memory_broker

__all__ = ["Transport", "connect", "memory_broker"]
