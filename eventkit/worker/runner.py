"""``run``: a worker process's life, with SIGTERM and SIGINT handled as R7 says.

- The first signal stops starting records, drains in-flight ones within the worker's
  ``drain_timeout``, commits, and stops; the exit code says whether everything finished.
- A second signal exits at once, without draining or committing.
- If the consume task dies the process exits non-zero; it never lingers half alive.
The embedding API (``app.start`` / ``app.stop``) is the same without the signal handling.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import signal
from typing import TYPE_CHECKING

from eventkit.errors import ConfigurationError, EventkitError

if TYPE_CHECKING:
    from eventkit.app import EventApp, StoreOption
    from eventkit.transports.url import Transport

logger = logging.getLogger("eventkit.runner")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# a second signal waits this long for the consumer to leave the group, then exits anyway
ABORT_GRACE_SECONDS = 3.0


class ExitCode(enum.IntEnum):
    """What a worker process's exit status means."""

    CLEAN = 0  # stopped by a signal (or asked to) after every started record finished
    CONSUMER_DIED = 1  # the consume loop failed; offsets stay at the last good commit
    CONFIGURATION = 2  # bad settings, a failed start-up check or connection: nothing consumed
    DRAIN_INCOMPLETE = 3  # stopped, but some records were cut off at the drain deadline
    ABORTED = 4  # a second signal: stopped at once without draining or committing


async def run(app: EventApp, transport: Transport | str, *, store: StoreOption) -> ExitCode:
    """Start ``app``, run until a stop signal or a failure, then stop it; return the exit code.

    ``store`` is what ``EventApp.start`` takes: a store, ``RedisSettings``, a ``redis://``
    URL, ``"memory"`` or ``None``.
    """
    loop = asyncio.get_running_loop()
    signals: asyncio.Queue[signal.Signals] = asyncio.Queue()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, signals.put_nowait, signum)
    try:
        started = await _start(app, transport, store, signals)
        if started is not None:
            return started
        logger.info("worker %s started", app.service)
        return await _serve(app, signals)
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)


async def _start(
    app: EventApp,
    transport: Transport | str,
    store: StoreOption,
    signals: asyncio.Queue[signal.Signals],
) -> ExitCode | None:
    """Start ``app``; ``None`` once it runs, else the exit code (a signal, a failed start)."""
    starting = asyncio.ensure_future(app.start(transport, store=store))
    signalled = asyncio.ensure_future(signals.get())
    # joining a group can take long: a signal meanwhile must still end the process
    await asyncio.wait([starting, signalled], return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        logger.info("%s received while starting: stopping", signalled.result().name)
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await app.abort()
        return ExitCode.CLEAN  # nothing was consumed
    if signalled.done():
        # the start finished in the same turn as a signal arrived: keep the signal for _serve
        signals.put_nowait(signalled.result())
    else:
        signalled.cancel()
    error = starting.exception()
    if error is None:
        return None
    if isinstance(error, ConfigurationError):
        raise error
    if isinstance(error, EventkitError):
        # the broker or another service was not reachable: nothing was consumed
        logger.error("the worker could not start: %s", error)
        return ExitCode.CONFIGURATION
    raise error


async def _serve(app: EventApp, signals: asyncio.Queue[signal.Signals]) -> ExitCode:
    worker = app.worker
    first_signal = asyncio.ensure_future(signals.get())
    died = asyncio.ensure_future(worker.wait())
    await asyncio.wait([first_signal, died], return_when=asyncio.FIRST_COMPLETED)
    if not first_signal.done():
        first_signal.cancel()
        logger.error("the consume loop died: %r", died.exception())
        await app.abort()
        return ExitCode.CONSUMER_DIED
    died.cancel()
    logger.info("%s received: draining", first_signal.result().name)
    stopping = asyncio.ensure_future(app.stop())
    second_signal = asyncio.ensure_future(signals.get())
    await asyncio.wait([stopping, second_signal], return_when=asyncio.FIRST_COMPLETED)
    if stopping.done():
        second_signal.cancel()
        clean = stopping.result()
        if worker.failure is not None:
            return ExitCode.CONSUMER_DIED
        return ExitCode.CLEAN if clean else ExitCode.DRAIN_INCOMPLETE
    logger.warning("%s received again: exiting without draining", second_signal.result().name)
    stopping.cancel()
    try:
        await asyncio.wait_for(app.abort(), ABORT_GRACE_SECONDS)
    except (TimeoutError, Exception):
        # at once means at once: a broker that does not answer cannot hold the process
        logging.shutdown()
        os._exit(ExitCode.ABORTED)
    return ExitCode.ABORTED
