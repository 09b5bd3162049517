"""Idempotency keys: one per (namespace, event type, identity), never per topic or partition."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from eventkit.codecs.wire import IDENTITY_SEPARATOR
from eventkit.keys import event_key, idempotency_key, namespace_for, storage_key

NAMESPACE = "eventkit:orders-svc:orders-svc-consumer"

#: what the envelope reader accepts as an event id: visible ASCII without spaces
EVENT_IDS = st.text(
    alphabet=string.ascii_letters + string.digits + string.punctuation, min_size=1, max_size=128
)
#: a CloudEvents source: printable (the reader refuses control characters there)
SOURCES = st.text(
    alphabet=st.characters(categories=("L", "N", "P", "S", "Zs")), min_size=1, max_size=64
)
#: an eventkit identity is the event id; a CloudEvent's is source + separator + id
IDENTITIES = EVENT_IDS | st.builds(
    lambda source, event_id: f"{source}{IDENTITY_SEPARATOR}{event_id}", SOURCES, EVENT_IDS
)
#: event types as handlers register them (printable; see the separator test below)
EVENT_TYPES = st.text(
    alphabet=st.characters(categories=("L", "N", "P", "S", "Zs")), min_size=1, max_size=64
)


def test_same_inputs_give_same_key() -> None:
    """The key is a pure function of its inputs: computing it twice gives the same string."""
    first = idempotency_key(NAMESPACE, "order.created", "evt-1")
    assert first == idempotency_key(NAMESPACE, "order.created", "evt-1")


def test_different_type_or_identity_gives_different_key() -> None:
    """Changing the event type or the identity changes the key."""
    key = idempotency_key(NAMESPACE, "order.created", "evt-1")
    assert key != idempotency_key(NAMESPACE, "order.paid", "evt-1")
    assert key != idempotency_key(NAMESPACE, "order.created", "evt-2")


def test_key_starts_with_namespace_prefix() -> None:
    """The key is the namespace, a colon and a fixed-length hex digest."""
    key = idempotency_key(NAMESPACE, "order.created", "evt-1")
    prefix, _, digest = key.rpartition(":")
    assert prefix == NAMESPACE
    assert len(digest) == 32
    assert set(digest) <= set(string.hexdigits.lower())


def test_different_namespace_gives_different_key() -> None:
    """The same event in two consumer groups has two keys."""
    other = namespace_for("orders-svc", "audit-consumer")
    assert idempotency_key(NAMESPACE, "order.created", "evt-1") != idempotency_key(
        other, "order.created", "evt-1"
    )


def test_identity_is_not_hashed_in_clear() -> None:
    """Event ids (producer input) never appear verbatim in the store key."""
    key = idempotency_key(NAMESPACE, "order.created", "evt-secret-123")
    assert "evt-secret-123" not in key
    assert "order.created" not in key


def test_namespace_for_includes_service_and_group() -> None:
    """The namespace names eventkit, the service and the consumer group."""
    namespace = namespace_for("orders-svc", "orders-svc-consumer")
    assert namespace == "eventkit:orders-svc:orders-svc-consumer"
    assert namespace_for("orders-svc", "a") != namespace_for("orders-svc", "b")
    assert namespace_for("billing-svc", "a") != namespace_for("orders-svc", "a")


def test_namespace_is_unambiguous_when_names_contain_colons() -> None:
    """Two distinct (service, group) pairs never share a namespace, colons or not."""
    assert namespace_for("billing:eu", "workers") != namespace_for("billing", "eu:workers")


def test_key_is_unambiguous_when_event_type_contains_the_separator() -> None:
    """An event type holding the identity separator cannot collide with a CloudEvent's key."""
    # eventkit event: type "order.created<US>billing", id "e1"
    # CloudEvent:     type "order.created", source "billing", id "e1"
    sep = IDENTITY_SEPARATOR
    assert idempotency_key(NAMESPACE, f"order.created{sep}billing", "e1") != idempotency_key(
        NAMESPACE, "order.created", f"billing{sep}e1"
    )


@settings(max_examples=200, deadline=None)
@given(pairs=st.lists(st.tuples(EVENT_TYPES, IDENTITIES), min_size=2, max_size=30, unique=True))
def test_distinct_type_identity_pairs_never_collide(pairs: list[tuple[str, str]]) -> None:
    """Among any generated distinct (event_type, identity) pairs, every key is different."""
    keys = {idempotency_key(NAMESPACE, event_type, identity) for event_type, identity in pairs}
    assert len(keys) == len(pairs)


@settings(max_examples=200, deadline=None)
@given(event_type=EVENT_TYPES, identity=IDENTITIES)
def test_key_depends_only_on_namespace_type_and_identity(event_type: str, identity: str) -> None:
    """Recomputing the key for the same inputs always gives the same value."""
    key = idempotency_key(NAMESPACE, event_type, identity)
    assert key == idempotency_key(NAMESPACE, event_type, identity)
    assert key.startswith(NAMESPACE + ":")


def test_event_key_names_the_event_unambiguously_and_feeds_the_storage_key() -> None:
    """The cheap event key separates namespace, type and identity; hashing it gives the
    storage key."""
    key = event_key(NAMESPACE, "order.created", "evt-1")
    assert key != event_key(NAMESPACE, "order.create", "devt-1")
    assert key != event_key(NAMESPACE + "x", "order.created", "evt-1")
    assert storage_key(key) == idempotency_key(NAMESPACE, "order.created", "evt-1")
    assert storage_key(key) != storage_key(event_key(NAMESPACE, "order.created", "evt-2"))
