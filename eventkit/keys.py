"""Idempotency keys: one per event, whatever topic, partition or transport carried it."""

from __future__ import annotations

import hashlib
import zlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import msgspec


#: Ends the namespace in an event key; never part of a namespace, type or identity.
NAMESPACE_END = "\x1e"


def event_key(namespace: str, event_type: str, identity: str) -> str:
    """The idempotency key of an event, as the dispatcher passes it to a store.

    ``namespace`` is per service and consumer group; ``identity`` is the event id (or a
    CloudEvent's source and id). Topic, partition and transport never enter, so a retry
    topic, a replay or a re-keyed producer delivers the same key. It is built without
    hashing, once per record; a store that keeps keys elsewhere stores ``storage_key(key)``.
    """
    return key_prefix(namespace, event_type) + identity


def key_prefix(namespace: str, event_type: str) -> str:
    """What every key of ``event_type`` in ``namespace`` starts with (``event_key`` without
    the identity), for callers that build many keys of one type."""
    # the type's length makes the split between type and identity unambiguous
    return f"{namespace}{NAMESPACE_END}{len(event_type)}:{event_type}"


def storage_key(key: str) -> str:
    """The bounded key a remote store (Redis) keeps: the namespace and a hash of the event.

    Hashing bounds the key's size whatever the identity holds, and keeps event ids out of
    the store's key space.
    """
    namespace, _, event = key.partition(NAMESPACE_END)
    # SHA-256 is hardware-assisted on most CPUs: faster here than BLAKE2 for short inputs
    return f"{namespace}:{hashlib.sha256(event.encode()).hexdigest()[:32]}"


def idempotency_key(namespace: str, event_type: str, identity: str) -> str:
    """The storage key of an event: ``storage_key(event_key(...))``."""
    return storage_key(event_key(namespace, event_type, identity))


def payload_hash(data: bytes | msgspec.Raw) -> str:
    """A short fingerprint of a payload, to count key conflicts (same key, other content).

    CRC-32: conflicts are counted, not defended against, so speed beats collision resistance.
    """
    return hex(zlib.crc32(data))


#: Every key eventkit keeps in a store starts with this; nothing else may write there.
RESERVED_PREFIX = "eventkit:"


def namespace_for(service: str, group_id: str) -> str:
    """The key prefix of one service's consumer group; a colon in a name cannot blur the two."""
    return f"{RESERVED_PREFIX}{_escape(service)}:{_escape(group_id)}"


def _escape(name: str) -> str:
    return name.replace("%", "%25").replace(":", "%3A")
