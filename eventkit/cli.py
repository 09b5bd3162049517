"""The ``eventkit`` command: ``eventkit worker module:app`` runs a worker process."""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
from typing import Annotated, Any

import typer

from eventkit.app import EventApp
from eventkit.errors import ConfigurationError
from eventkit.idempotency.redis_settings import SCHEMES, RedisSettings
from eventkit.worker.runner import ExitCode, run

cli = typer.Typer(
    name="eventkit",
    help="Run and inspect eventkit worker services.",
    no_args_is_help=True,
    add_completion=False,
)


STORE_OPTION = "--idempotency-store (EVENTKIT_IDEMPOTENCY_STORE)"


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
        str,
        typer.Option(
            envvar="EVENTKIT_IDEMPOTENCY_STORE",
            help=(
                "Idempotency store: redis://[USER:PASSWORD@]HOST:PORT/DB[?option=value...] "
                "(rediss:// for TLS); 'memory' keeps keys in this process only; 'none' only "
                "if no handler is idempotent. Prefer the variable for URLs with a password."
            ),
            show_default=True,
        ),
    ] = "none",
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
        store = parse_store(idempotency_store)
        if store is None and app.idempotent_handlers():
            raise ConfigurationError(
                f"handlers {app.idempotent_handlers()} are idempotent but {STORE_OPTION} is "
                "none: set it to a redis:// URL, or to memory to keep keys in this process "
                "only, or turn idempotency off in the app"
            )
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


def parse_store(value: str) -> RedisSettings | str | None:
    """The ``--idempotency-store`` value as ``EventApp.start(store=...)`` takes it.

    ``none`` is ``None``, ``memory`` stays ``"memory"``, a ``redis://`` or ``rediss://`` URL
    becomes ``RedisSettings``. Anything else is a ``ConfigurationError`` naming the option.
    """
    choice = value.strip()
    if choice.lower() == "none":
        return None
    if choice.lower() == "memory":
        return "memory"
    scheme = choice.partition("://")[0]
    if scheme not in SCHEMES:
        # the value may be a mistyped URL with a password: show its scheme only
        raise ConfigurationError(
            f"{STORE_OPTION} must be none, memory, or a redis:// or rediss:// URL, not {scheme!r}"
        )
    try:
        return RedisSettings.from_url(choice)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{STORE_OPTION}: {exc}") from None


def main() -> None:
    cli()
