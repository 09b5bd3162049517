"""The ``eventkit`` command: ``eventkit worker module:app`` runs a worker process."""

from __future__ import annotations

import asyncio
import enum
import importlib
import logging
import sys
from typing import Annotated, Any

import typer

from eventkit.app import EventApp
from eventkit.clock import SystemClock
from eventkit.errors import ConfigurationError
from eventkit.idempotency import InMemoryIdempotencyStore
from eventkit.worker.runner import ExitCode, run

cli = typer.Typer(
    name="eventkit",
    help="Run and inspect eventkit worker services.",
    no_args_is_help=True,
    add_completion=False,
)


class StoreChoice(enum.StrEnum):
    """Where idempotency keys live."""

    NONE = "none"  # only valid when no handler is idempotent
    MEMORY = "memory"  # this process only: keys are lost on exit and not shared


@cli.callback()
def _root() -> None:
    """eventkit: declarative event consumers on Kafka."""


@cli.command()
def worker(
    app_path: Annotated[str, typer.Argument(help="The app to run, as module:attribute.")],
    broker: Annotated[
        str,
        typer.Option(
            envvar="EVENTKIT_BROKER",
            help="Transport URL: kafka://HOST:PORT[?option=value...] or memory://NAME.",
        ),
    ] = "kafka://localhost:9092",
    idempotency_store: Annotated[
        StoreChoice,
        typer.Option(
            envvar="EVENTKIT_IDEMPOTENCY_STORE",
            help="Idempotency store; 'memory' keeps keys in this process only.",
        ),
    ] = StoreChoice.NONE,
    factory: Annotated[
        bool, typer.Option(help="APP_PATH names a function that returns the app.")
    ] = False,
    log_level: Annotated[
        str, typer.Option(envvar="EVENTKIT_LOG_LEVEL", help="Python logging level.")
    ] = "INFO",
) -> None:
    """Consume until SIGTERM or SIGINT: drain, commit, exit 0 if every record finished.

    A second signal exits at once without committing. Exit codes: 1 the consume loop died;
    2 bad settings, or the start-up check or connection failed; 3 records were cut off at the
    drain deadline; 4 aborted by a second signal.
    """
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        app = load_app(app_path, factory=factory)
        store = _store(idempotency_store)
        code = asyncio.run(run(app, broker, store=store))
    except ConfigurationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(ExitCode.CONFIGURATION) from None
    raise typer.Exit(code)


def load_app(path: str, *, factory: bool = False) -> EventApp:
    """The ``EventApp`` named ``module:attribute`` (called first if ``factory``)."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"app path {path!r} must look like module:attribute")
    # the current directory is importable, as for `python -m`
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from exc
    try:
        target: Any = getattr(module, attribute)
    except AttributeError:
        raise ConfigurationError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if factory:
        target = target()
    if not isinstance(target, EventApp):
        raise ConfigurationError(f"{path} is a {type(target).__name__}, not an EventApp")
    return target


def _store(choice: StoreChoice) -> InMemoryIdempotencyStore | None:
    if choice is StoreChoice.MEMORY:
        return InMemoryIdempotencyStore(SystemClock())
    return None


def main() -> None:
    cli()
