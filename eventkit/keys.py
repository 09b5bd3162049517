"""Idempotency keys: one per event, whatever topic, partition or transport carried it."""

from __future__ import annotations

import hashlib


def idempotency_key(namespace: str, event_type: str, identity: str) -> str:
    """The store key of an event: the namespace plus a hash of its type and identity.

    ``namespace`` is per service and consumer group; ``identity`` is the event id (or a
    CloudEvent's source and id). Topic, partition and transport never enter, so a retry
    topic, a replay or a re-keyed producer delivers the same key.
    """
    digest = hashlib.blake2b(f"{event_type}\x1f{identity}".encode(), digest_size=16).hexdigest()
    return f"{namespace}:{digest}"


def payload_hash(data: bytes) -> str:
    """A short fingerprint of a payload, to count key conflicts (same key, other content)."""
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def namespace_for(service: str, group_id: str) -> str:
    """The key prefix of one service's consumer group."""
    return f"eventkit:{service}:{group_id}"
