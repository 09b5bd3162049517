"""The core never imports client libraries; only adapters and integrations may."""

from __future__ import annotations

import ast
from fnmatch import fnmatch
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "eventkit"

#: libraries only adapters, integrations, the CLI and settings may import
CLIENT_LIBRARIES = (
    "aiokafka",
    "redis",
    "dishka",
    "typer",
    "click",
    "aiohttp",
    "opentelemetry.sdk",
    "prometheus_client",
    "structlog",
)

#: files (relative to the repo, ``/``-separated) allowed to import client libraries
ADAPTER_PATTERNS = (
    "eventkit/transports/kafka*.py",
    "eventkit/idempotency/redis*.py",
    "eventkit/embedded_*.py",
    "eventkit/integrations/*",
    "eventkit/observability/*",
    "eventkit/cli*.py",
    "eventkit/settings.py",
)

#: calls that import a module named by a string
DYNAMIC_IMPORTS = frozenset({"import_module", "__import__"})


def is_client_library(module: str) -> bool:
    """Whether ``module`` is one of the client libraries or a submodule of one."""
    return any(module == lib or module.startswith(lib + ".") for lib in CLIENT_LIBRARIES)


def imported_modules(source: str) -> list[str]:
    """Every absolute module an ``import``, ``from`` import or ``import_module("...")`` names.

    ``from a import b`` yields both ``a`` and ``a.b``, since ``b`` may be a submodule.
    """
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(node.module)
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            first = node.args[0]
            if (
                name in DYNAMIC_IMPORTS
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
            ):
                found.append(first.value)
    return found


def forbidden_imports(source: str) -> list[str]:
    """The client-library modules ``source`` imports, in order of appearance."""
    return [module for module in imported_modules(source) if is_client_library(module)]


def is_adapter(relative: str) -> bool:
    """Whether the file at ``relative`` may import client libraries."""
    return any(fnmatch(relative, pattern) for pattern in ADAPTER_PATTERNS)


def core_files() -> list[Path]:
    """Every ``.py`` file under ``eventkit/`` that is not an adapter."""
    return [
        path
        for path in sorted(PACKAGE.rglob("*.py"))
        if not is_adapter(path.relative_to(REPO).as_posix())
    ]


def test_core_never_imports_client_libraries() -> None:
    """No core module imports aiokafka, redis, dishka, CLI, HTTP, OTel SDK or metrics libraries."""
    files = core_files()
    assert len(files) > 10, "the walk found too few files to mean anything"
    violations = {
        path.relative_to(REPO).as_posix(): found
        for path in files
        if (found := forbidden_imports(path.read_text(encoding="utf-8")))
    }
    assert violations == {}


@pytest.mark.parametrize(
    "source",
    [
        "import aiokafka",
        "import aiokafka.errors as errors",
        "from redis.asyncio import Redis",
        "from opentelemetry import sdk",
        "from opentelemetry.sdk.trace import TracerProvider",
        "import structlog, json",
        "def lazy():\n    import prometheus_client\n",
        "if TYPE_CHECKING:\n    from dishka import Provider\n",
        "importlib.import_module('aiohttp')",
        "__import__('click')",
    ],
)
def test_checker_flags_client_library_imports(source: str) -> None:
    """The checker flags direct, nested, lazy, TYPE_CHECKING and dynamic client imports."""
    assert forbidden_imports(source) != []


@pytest.mark.parametrize(
    "source",
    [
        "import opentelemetry.trace",
        "from opentelemetry import trace",
        "import redistools",
        "import clickhouse",
        "from . import redis",
        "from .transports import kafka",
        "import msgspec, pydantic",
    ],
)
def test_checker_allows_other_imports(source: str) -> None:
    """The OTel API, look-alike names and relative imports are not flagged."""
    assert forbidden_imports(source) == []


def test_checker_fails_on_a_planted_violation() -> None:
    """A core file doing ``import aiokafka`` would fail the layering test."""
    planted = '"""A core module."""\n\nfrom __future__ import annotations\n\nimport aiokafka\n'
    assert forbidden_imports(planted) == ["aiokafka"]


@pytest.mark.parametrize(
    ("relative", "adapter"),
    [
        ("eventkit/transports/kafka.py", True),
        ("eventkit/transports/kafka_consumer.py", True),
        ("eventkit/idempotency/redis.py", True),
        ("eventkit/integrations/dishka.py", True),
        ("eventkit/observability/metrics.py", True),
        ("eventkit/cli.py", True),
        ("eventkit/settings.py", True),
        ("eventkit/transports/memory.py", False),
        ("eventkit/idempotency/memory.py", False),
        ("eventkit/dispatcher.py", False),
        ("eventkit/worker/worker.py", False),
    ],
)
def test_only_adapter_paths_are_exempt(relative: str, adapter: bool) -> None:
    """Exemptions cover the adapter, integration, CLI and settings files, nothing else."""
    assert is_adapter(relative) is adapter
