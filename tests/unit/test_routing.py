"""``Router``, ``@app.handler``, signatures and ``AppPolicies``: registration fails early."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import pydantic
import pytest

from eventkit import (
    ConfigurationError,
    DuplicateHandlerError,
    EventApp,
    EventContext,
    EventEnvelope,
    Ordering,
    RetryPolicy,
    Router,
    UnknownEventPolicy,
)
from eventkit.app import AppPolicies
from eventkit.signature import HandlerParam, ParamKind

if TYPE_CHECKING:
    # only under TYPE_CHECKING, as ruff's TC rules would put it: unresolvable at runtime
    from fractions import Fraction

    from eventkit.routing import HandlerSpec


class OrderModel(pydantic.BaseModel):
    """A pydantic payload."""

    order_id: str


class OrderStruct(msgspec.Struct):
    """A msgspec payload."""

    order_id: str


@dataclass(frozen=True)
class OrderData:
    """A dataclass payload."""

    order_id: str


class PlainOrder:
    """A class neither pydantic nor msgspec can build."""

    def __init__(self, order_id: str) -> None:
        self.order_id = order_id


ORDER_JSON = msgspec.Raw(b'{"order_id": "o-1"}')


def only_spec(router: Router) -> HandlerSpec:
    """The single handler registered on ``router``."""
    specs = list(router)
    assert len(specs) == 1
    return specs[0]


# -- duplicates and topics ---------------------------------------------------------------------


def test_duplicate_route_raises_at_decoration_naming_both_handlers() -> None:
    """A second handler for the same (topic, event_type) fails when decorated, naming both."""
    app = EventApp("orders-svc")

    @app.handler("order.created", topic="orders")
    async def first_handler(order: OrderModel) -> None: ...

    async def second_handler(order: OrderModel) -> None: ...

    decorate = app.handler("order.created", topic="orders")
    with pytest.raises(DuplicateHandlerError) as caught:
        decorate(second_handler)
    message = str(caught.value)
    assert first_handler.__qualname__ in message
    assert second_handler.__qualname__ in message
    assert "order.created" in message
    assert only_spec(app).func is first_handler


def test_same_event_type_on_two_topics_is_allowed() -> None:
    """One event type may have a handler per topic."""
    app = EventApp("orders-svc")

    @app.handler("order.created", topic="orders")
    async def on_orders(order: OrderModel) -> None: ...

    @app.handler("order.created", topic="orders-replay")
    async def on_replay(order: OrderModel) -> None: ...

    assert app.topics() == frozenset({"orders", "orders-replay"})
    first = app.spec_for("orders", "order.created")
    second = app.spec_for("orders-replay", "order.created")
    assert first is not None
    assert second is not None
    assert first.func is on_orders
    assert second.func is on_replay


def test_include_router_merges_handlers_keeping_their_topics() -> None:
    """``include_router`` adds every handler of the router with the router's topic."""
    app = EventApp("orders-svc", topic="payments")
    router = Router(topic="orders")

    @router.handler("order.created")
    async def on_created(order: OrderModel) -> None: ...

    @router.handler("order.paid")
    async def on_paid(order: OrderModel) -> None: ...

    @app.handler("payment.settled")
    async def on_settled(order: OrderModel) -> None: ...

    app.include_router(router)
    assert len(app) == 3
    assert app.routes() == {
        "orders": {
            "order.created": router.spec_for("orders", "order.created"),
            "order.paid": router.spec_for("orders", "order.paid"),
        },
        "payments": {"payment.settled": app.spec_for("payments", "payment.settled")},
    }


def test_include_router_detects_duplicates_across_routers() -> None:
    """A route taken both in the app and in an included router is a ``DuplicateHandlerError``."""
    app = EventApp("orders-svc", topic="orders")
    router = Router(topic="orders")

    @app.handler("order.created")
    async def in_app(order: OrderModel) -> None: ...

    @router.handler("order.created")
    async def in_router(order: OrderModel) -> None: ...

    with pytest.raises(DuplicateHandlerError) as caught:
        app.include_router(router)
    assert in_app.__qualname__ in str(caught.value)
    assert in_router.__qualname__ in str(caught.value)


def test_router_default_topic_applies_unless_overridden() -> None:
    """Handlers use the router's topic unless they name their own."""
    router = Router(topic="orders")

    @router.handler("order.created")
    async def on_default(order: OrderModel) -> None: ...

    @router.handler("order.archived", topic="archive")
    async def on_other(order: OrderModel) -> None: ...

    created = router.spec_for("orders", "order.created")
    archived = router.spec_for("archive", "order.archived")
    assert created is not None
    assert archived is not None
    assert created.func is on_default
    assert archived.func is on_other
    assert router.topics() == frozenset({"orders", "archive"})


def test_missing_topic_raises_configuration_error() -> None:
    """Without a topic on the handler or the router, registration fails naming the type."""
    with pytest.raises(ConfigurationError, match=r"order\.created.*needs a topic"):
        Router().handler("order.created")


def test_empty_event_type_raises_configuration_error() -> None:
    """An empty event type is refused."""
    with pytest.raises(ConfigurationError, match="event_type"):
        Router(topic="orders").handler("")


# -- options -----------------------------------------------------------------------------------


def test_handler_options_are_stored() -> None:
    """retry, idempotent, idempotency_ttl, timeout and ordering land in the spec's options."""
    router = Router(topic="orders")
    policy = RetryPolicy(max_attempts=3)

    @router.handler(
        "order.created",
        retry=policy,
        idempotent=False,
        idempotency_ttl=60.0,
        timeout=2.5,
        ordering=Ordering.KEY,
    )
    async def on_created(order: OrderModel) -> None: ...

    options = only_spec(router).options
    assert options.retry is policy
    assert options.idempotent is False
    assert options.idempotency_ttl == 60.0
    assert options.timeout == 2.5
    assert options.ordering is Ordering.KEY


def test_handler_options_default_to_none() -> None:
    """Options not given are ``None``: the app's defaults apply."""
    router = Router(topic="orders")

    @router.handler("order.created")
    async def on_created(order: OrderModel) -> None: ...

    options = only_spec(router).options
    assert options.retry is None
    assert options.idempotent is None
    assert options.idempotency_ttl is None
    assert options.timeout is None
    assert options.ordering is None


@pytest.mark.parametrize(
    ("given", "expected"), [("key", Ordering.KEY), ("partition", Ordering.PARTITION)]
)
def test_ordering_given_as_string_becomes_enum(given: str, expected: Ordering) -> None:
    """``ordering`` accepts the enum's string value."""
    router = Router(topic="orders")

    @router.handler("order.created", ordering=given)
    async def on_created(order: OrderModel) -> None: ...

    assert only_spec(router).options.ordering is expected


def test_invalid_ordering_string_raises_configuration_error() -> None:
    """An unknown ordering string fails at decoration time, naming the valid values."""
    with pytest.raises(ConfigurationError, match="ordering must be one of 'partition', 'key'"):
        Router(topic="orders").handler("order.created", ordering="by-key")


@pytest.mark.parametrize(
    "options",
    [{"timeout": 0.0}, {"timeout": -1.0}, {"idempotency_ttl": 0.0}, {"idempotency_ttl": -5.0}],
)
def test_non_positive_timeout_or_ttl_raises_configuration_error(options: dict[str, Any]) -> None:
    """A timeout or idempotency_ttl that is zero or negative is refused."""
    with pytest.raises(ConfigurationError, match="must be positive"):
        Router(topic="orders").handler("order.created", **options)


# -- signatures --------------------------------------------------------------------------------


def test_sync_handler_raises_configuration_error_naming_it() -> None:
    """A plain ``def`` handler is refused, naming the handler."""

    def sync_handler(order: OrderModel) -> None: ...

    func: Any = sync_handler
    with pytest.raises(ConfigurationError, match="must be an async function") as caught:
        Router(topic="orders").handler("order.created")(func)
    assert sync_handler.__qualname__ in str(caught.value)


def test_var_positional_raises_configuration_error_naming_handler() -> None:
    """``*args`` is refused, naming the handler."""

    async def star_args(*orders: OrderModel) -> None: ...

    with pytest.raises(ConfigurationError, match=r"\*args or \*\*kwargs") as caught:
        Router(topic="orders").handler("order.created")(star_args)
    assert star_args.__qualname__ in str(caught.value)


def test_var_keyword_raises_configuration_error_naming_handler() -> None:
    """``**kwargs`` is refused, naming the handler."""

    async def star_kwargs(order: OrderModel, **extra: str) -> None: ...

    with pytest.raises(ConfigurationError, match=r"\*args or \*\*kwargs") as caught:
        Router(topic="orders").handler("order.created")(star_kwargs)
    assert star_kwargs.__qualname__ in str(caught.value)


def test_unannotated_parameter_raises_configuration_error_naming_handler() -> None:
    """A parameter without a type is refused, naming the parameter and the handler."""

    async def untyped(order) -> None: ...  # type: ignore[no-untyped-def]

    with pytest.raises(ConfigurationError, match=r"'order'.*needs a type") as caught:
        Router(topic="orders").handler("order.created")(untyped)
    assert untyped.__qualname__ in str(caught.value)


def test_two_payload_parameters_raise_configuration_error_naming_handler() -> None:
    """Two payload parameters are refused, naming both and the handler."""

    async def two_payloads(order: OrderModel, other: OrderStruct) -> None: ...

    with pytest.raises(ConfigurationError, match="two payload parameters") as caught:
        Router(topic="orders").handler("order.created")(two_payloads)
    message = str(caught.value)
    assert two_payloads.__qualname__ in message
    assert "'order'" in message
    assert "'other'" in message


def test_payload_and_envelope_together_raise_configuration_error() -> None:
    """A payload and an ``EventEnvelope`` parameter count as two payloads."""

    async def both(order: OrderModel, envelope: EventEnvelope[OrderModel]) -> None: ...

    with pytest.raises(ConfigurationError, match="two payload parameters") as caught:
        Router(topic="orders").handler("order.created")(both)
    assert both.__qualname__ in str(caught.value)


def test_unresolvable_forward_reference_raises_configuration_error_naming_handler() -> None:
    """An annotation imported only under TYPE_CHECKING fails at registration, naming the handler."""

    async def type_checking_only(amount: Fraction) -> None: ...

    with pytest.raises(ConfigurationError, match="cannot resolve the annotations") as caught:
        Router(topic="orders").handler("order.created")(type_checking_only)
    assert type_checking_only.__qualname__ in str(caught.value)
    assert "Fraction" in str(caught.value)


def test_payload_only_signature() -> None:
    """A single typed parameter receives the payload; no context is wanted."""
    router = Router(topic="orders")

    @router.handler("order.created")
    async def on_created(order: OrderModel) -> None: ...

    signature = only_spec(router).signature
    assert signature.params == (HandlerParam("order", ParamKind.PAYLOAD, keyword_only=False),)
    assert signature.payload_type is OrderModel
    assert signature.wants_context is False


def test_payload_and_context_signature() -> None:
    """A parameter typed ``EventContext`` receives the context, the other the payload."""
    router = Router(topic="orders")

    @router.handler("order.created")
    async def on_created(order: OrderModel, ctx: EventContext) -> None: ...

    signature = only_spec(router).signature
    assert signature.params == (
        HandlerParam("order", ParamKind.PAYLOAD, keyword_only=False),
        HandlerParam("ctx", ParamKind.CONTEXT, keyword_only=False),
    )
    assert signature.payload_type is OrderModel
    assert signature.wants_context is True


def test_typed_envelope_signature_has_model_payload_type() -> None:
    """``EventEnvelope[Model]`` receives the envelope and the payload type is ``Model``."""
    router = Router(topic="orders")

    @router.handler("order.created")
    async def on_created(envelope: EventEnvelope[OrderModel]) -> None: ...

    signature = only_spec(router).signature
    assert signature.params == (HandlerParam("envelope", ParamKind.ENVELOPE, keyword_only=False),)
    assert signature.payload_type is OrderModel


def test_bare_envelope_signature_has_dict_payload_type() -> None:
    """A bare ``EventEnvelope`` receives the envelope with a ``dict`` payload."""
    router = Router(topic="orders")

    @router.handler("order.created")
    async def on_created(envelope: EventEnvelope) -> None: ...  # type: ignore[type-arg]

    spec = only_spec(router)
    assert spec.signature.params[0].kind is ParamKind.ENVELOPE
    assert spec.signature.payload_type == dict[str, Any]
    assert spec.decoder is not None
    assert spec.decoder(ORDER_JSON) == {"order_id": "o-1"}


def test_keyword_only_context_is_detected() -> None:
    """A keyword-only ``EventContext`` parameter is marked keyword-only."""
    router = Router(topic="orders")

    @router.handler("order.created")
    async def on_created(order: OrderModel, *, ctx: EventContext) -> None: ...

    signature = only_spec(router).signature
    assert signature.params == (
        HandlerParam("order", ParamKind.PAYLOAD, keyword_only=False),
        HandlerParam("ctx", ParamKind.CONTEXT, keyword_only=True),
    )


# -- payload decoders --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload_type", "expected"),
    [
        (OrderModel, OrderModel(order_id="o-1")),
        (OrderStruct, OrderStruct(order_id="o-1")),
        (OrderData, OrderData(order_id="o-1")),
        (dict[str, Any], {"order_id": "o-1"}),
    ],
)
def test_decoder_built_for_supported_payload_types(payload_type: Any, expected: object) -> None:
    """pydantic models, msgspec Structs, dataclasses and dicts get a working decoder."""
    router = Router(topic="orders")

    async def on_created(order: Any) -> None: ...

    on_created.__annotations__["order"] = payload_type
    router.handler("order.created")(on_created)
    decoder = only_spec(router).decoder
    assert decoder is not None
    assert decoder(ORDER_JSON) == expected


def test_no_decoder_when_handler_takes_no_payload() -> None:
    """A handler with only a context (or nothing) has no payload decoder."""
    router = Router(topic="orders")

    @router.handler("order.created")
    async def context_only(ctx: EventContext) -> None: ...

    @router.handler("order.deleted")
    async def no_params() -> None: ...

    for spec in router:
        assert spec.decoder is None
        assert spec.signature.payload_type is None


def test_unsupported_payload_type_raises_at_registration() -> None:
    """A payload type no codec can build fails at decoration time and nothing is registered."""
    router = Router(topic="orders")

    async def on_created(order: PlainOrder) -> None: ...

    with pytest.raises(ConfigurationError, match=r"PlainOrder.*not supported"):
        router.handler("order.created")(on_created)
    assert len(router) == 0


# -- EventApp.validate and AppPolicies ---------------------------------------------------------


def test_validate_without_handlers_raises() -> None:
    """An app with no handlers fails validation, naming the service."""
    with pytest.raises(ConfigurationError, match="'orders-svc' has no handlers"):
        EventApp("orders-svc").validate()


def test_validate_rejects_ttl_override_for_unregistered_type() -> None:
    """A per-type TTL naming a type no handler handles fails validation, naming the type."""
    app = EventApp(
        "orders-svc",
        topic="orders",
        idempotency_ttls={"order.created": 60.0, "order.craeted": 60.0},
    )

    @app.handler("order.created")
    async def on_created(order: OrderModel) -> None: ...

    with pytest.raises(ConfigurationError, match=r"order\.craeted") as caught:
        app.validate()
    assert "'order.created'" not in str(caught.value)


def test_validate_accepts_ttl_overrides_for_registered_types() -> None:
    """Per-type TTLs naming registered types pass validation."""
    app = EventApp("orders-svc", topic="orders", idempotency_ttls={"order.created": 60.0})

    @app.handler("order.created")
    async def on_created(order: OrderModel) -> None: ...

    app.validate()
    assert app.policies.idempotency_ttls == {"order.created": 60.0}


def test_unknown_event_policy_accepts_its_string_value() -> None:
    """``unknown_event_types`` may be given as the enum's string value."""
    app = EventApp("orders-svc", unknown_event_types="dead_letter")
    assert app.policies.unknown_event_types is UnknownEventPolicy.DEAD_LETTER
    assert EventApp("orders-svc").policies.unknown_event_types is UnknownEventPolicy.SKIP


def test_ttl_for_prefers_handler_option_then_type_override_then_default() -> None:
    """A handler's TTL wins over a per-type override, which wins over the default (a merge)."""
    policies = AppPolicies(
        service="orders-svc",
        idempotency_ttl=1000.0,
        idempotency_ttls={"order.created": 60.0, "order.paid": 90.0},
    )
    router = Router(topic="orders")

    @router.handler("order.created", idempotency_ttl=5.0)
    async def with_option(order: OrderModel) -> None: ...

    @router.handler("order.paid")
    async def with_override(order: OrderModel) -> None: ...

    @router.handler("order.shipped")
    async def with_default(order: OrderModel) -> None: ...

    ttls = {spec.event_type: policies.ttl_for(spec) for spec in router}
    assert ttls == {"order.created": 5.0, "order.paid": 90.0, "order.shipped": 1000.0}


def test_retry_for_prefers_handler_policy_over_app_default() -> None:
    """A handler's retry policy replaces the app's; without one the app's applies."""
    app_policy = RetryPolicy(max_attempts=7)
    handler_policy = RetryPolicy(max_attempts=2)
    policies = AppPolicies(service="orders-svc", retry=app_policy)
    router = Router(topic="orders")

    @router.handler("order.created", retry=handler_policy)
    async def with_policy(order: OrderModel) -> None: ...

    @router.handler("order.paid")
    async def without_policy(order: OrderModel) -> None: ...

    retries = {spec.event_type: policies.retry_for(spec) for spec in router}
    assert retries == {"order.created": handler_policy, "order.paid": app_policy}
    assert AppPolicies(service="orders-svc").retry == RetryPolicy()


@pytest.mark.parametrize(
    ("app_default", "option", "expected"),
    [
        (True, None, True),
        (False, None, False),
        (True, False, False),
        (False, True, True),
    ],
)
def test_idempotent_option_overrides_app_default(
    app_default: bool, option: bool | None, expected: bool
) -> None:
    """``idempotent`` on the handler wins; ``None`` takes the app's setting."""
    policies = AppPolicies(service="orders-svc", idempotency=app_default)
    router = Router(topic="orders")

    @router.handler("order.created", idempotent=option)
    async def on_created(order: OrderModel) -> None: ...

    assert policies.idempotent(only_spec(router)) is expected


def test_idempotency_is_on_by_default() -> None:
    """An app deduplicates unless told otherwise."""
    assert AppPolicies(service="orders-svc").idempotency is True
    assert EventApp("orders-svc").policies.idempotency is True


@pytest.mark.parametrize(
    "options",
    [
        {"service": ""},
        {"service": "s", "lease_seconds": 0.0},
        {"service": "s", "idempotency_ttl": 0.0},
        {"service": "s", "max_claim_chunk": 0},
        {"service": "s", "idempotency_ttls": {"order.created": -1.0}},
    ],
)
def test_invalid_app_policies_raise_configuration_error(options: dict[str, Any]) -> None:
    """Empty service, non-positive lease, TTLs or claim chunk are refused."""
    with pytest.raises(ConfigurationError):
        AppPolicies(**options)
