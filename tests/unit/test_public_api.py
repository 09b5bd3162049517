"""The public API is exactly what ``eventkit.__all__`` lists; this test pins it."""

from __future__ import annotations

import importlib
import tomllib
import types
from pathlib import Path

import eventkit

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"

EXPECTED_ALL = [
    "CommitFailedError",
    "ConfigurationError",
    "DecodeLimits",
    "Delivery",
    "DuplicateHandlerError",
    "EventApp",
    "EventContext",
    "EventEnvelope",
    "EventPublisher",
    "EventkitError",
    "HandlerTimeoutError",
    "InfrastructureError",
    "InvalidEnvelopeError",
    "InvalidPayloadError",
    "LeaseLostError",
    "Middleware",
    "Next",
    "NonRetryableError",
    "Ordering",
    "Outcome",
    "OutgoingEvent",
    "OversizedRecordError",
    "PoisonRecordError",
    "PublishError",
    "PublisherNotStartedError",
    "RecordObserver",
    "RedisEffects",
    "RetryPolicy",
    "RetryableError",
    "Router",
    "StoreUnavailableError",
    "TopicPartition",
    "UndecodableRecordError",
    "UnknownEventPolicy",
    "UnroutableEventError",
    "WorkerConfig",
    "__version__",
    "compose",
]


def test_all_is_pinned() -> None:
    """``__all__`` holds exactly the reviewed names; changing it means changing this test."""
    assert sorted(eventkit.__all__) == EXPECTED_ALL


def test_all_is_sorted_without_duplicates() -> None:
    """``__all__`` is kept sorted (as ruff's RUF022 wants) and lists each name once."""
    assert len(set(eventkit.__all__)) == len(eventkit.__all__)
    assert eventkit.__all__ == EXPECTED_ALL


def test_every_name_in_all_is_importable() -> None:
    """``from eventkit import <name>`` works for every listed name."""
    module = importlib.import_module("eventkit")
    missing = [name for name in eventkit.__all__ if not hasattr(module, name)]
    assert missing == []
    namespace: dict[str, object] = {}
    exec("from eventkit import *", namespace)  # the star import is what is tested
    assert set(eventkit.__all__) - {"__version__"} <= set(namespace)


def test_no_public_name_is_missing_from_all() -> None:
    """Every public attribute of ``eventkit`` other than submodules is listed in ``__all__``."""
    unlisted = [
        name
        for name, value in vars(eventkit).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        # ``from __future__ import annotations`` leaves a feature object named ``annotations``
        and type(value).__module__ != "__future__"
        and name not in eventkit.__all__
    ]
    assert unlisted == []


def test_version_is_a_string_matching_pyproject() -> None:
    """``eventkit.__version__`` is a string equal to the packaged version."""
    assert isinstance(eventkit.__version__, str)
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    assert eventkit.__version__ == project["version"]
