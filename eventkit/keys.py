"""Idempotency keys: one per event, whatever topic, partition or transport carried it."""

from __future__ import annotations

import hashlib
import zlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import msgspec


def idempotency_key(namespace: str, event_type: str, identity: str) -> str:
    """The store key of an event: the namespace plus a hash of its type and identity.

    ``namespace`` is per service and consumer group; ``identity`` is the event id (or a
    CloudEvent's source and id). Topic, partition and transport never enter, so a retry
    topic, a replay or a re-keyed producer delivers the same key.
    """
    # the length prefix makes the split between type and identity unambiguous
    material = f"{len(event_type)}:{event_type}{identity}".encode()
    return f"{namespace}:{hashlib.blake2b(material, digest_size=16).hexdigest()}"


def payload_hash(data: bytes | msgspec.Raw) -> str:
    """A short fingerprint of a payload, to count key conflicts (same key, other content).

    CRC-32: conflicts are counted, not defended against, so speed beats collision resistance.
    """
    return f"{zlib.crc32(data):08x}"


def namespace_for(service: str, group_id: str) -> str:
    """The key prefix of one service's consumer group; a colon in a name cannot blur the two."""
    return f"eventkit:{_escape(service)}:{_escape(group_id)}"


def _escape(name: str) -> str:
    return name.replace("%", "%25").replace(":", "%3A")
