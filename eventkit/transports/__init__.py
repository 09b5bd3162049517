"""Transports: adapters of the ``Consumer`` and ``Publisher`` ports (in memory, Kafka)."""
