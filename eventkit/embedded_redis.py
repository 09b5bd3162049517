"""``EmbeddedRedis``: a ``redis-server`` process of its own for tests, benchmarks and the demo.

``EmbeddedRedis`` starts ``redis-server`` (``$EVENTKIT_REDIS_SERVER``, else the one on ``PATH``)
on a free loopback port, with no persistence and a scratch directory, so a restart comes back
empty (the "Redis killed and restarted empty" fault). It never touches a Redis on 6379.
Faults: ``stop``, ``kill``, ``pause`` (SIGSTOP), ``resume`` (SIGCONT) and ``restart`` on the
same port. A missing binary raises with how to install it: a failure, never a skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

import redis

from eventkit._child_process import die_with_parent, free_port, stop_process

REDIS_SERVER_ENV = "EVENTKIT_REDIS_SERVER"
_PR_SET_PDEATHSIG = 1
_INSTALL_HINT = (
    "install Debian's redis-server package (apt-get install redis-server, or run "
    f"scripts/ensure_system_deps.sh) or set {REDIS_SERVER_ENV} to a redis-server executable"
)


def find_redis_server() -> str:
    """The ``redis-server`` binary: ``$EVENTKIT_REDIS_SERVER``, else the one on ``PATH``."""
    explicit = os.environ.get(REDIS_SERVER_ENV)
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise RuntimeError(f"{REDIS_SERVER_ENV}={explicit!r} is not an executable file")
        return explicit
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError(f"no redis-server binary on PATH: {_INSTALL_HINT}")
    return found


class EmbeddedRedis:
    """One ``redis-server`` on a free loopback port, without persistence.

    Use as a context manager, or call ``start`` and ``stop``. ``scratch`` is its working
    directory (a fresh temporary one unless given); its log is ``redis.log`` there.
    """

    def __init__(
        self, *, port: int | None = None, binary: str | None = None, scratch: Path | None = None
    ) -> None:
        self.binary = binary or find_redis_server()
        self.port = port or free_port()
        self._own_scratch = scratch is None
        self.scratch = scratch or Path(tempfile.mkdtemp(prefix="eventkit-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("redis-server is not running")
        return self._process.pid

    @property
    def log(self) -> Path:
        return self.scratch / "redis.log"

    def start(self, timeout: float = 10.0) -> None:
        """Start the process and return once it answers PING."""
        if self._process is not None:
            raise RuntimeError("redis-server is running already")
        self.scratch.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                self.host,
                # no RDB snapshots and no AOF: a restart comes back empty, nothing is written
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.scratch),
                "--logfile",
                str(self.log),
                "--daemonize",
                "no",
                "--maxmemory-policy",
                "noeviction",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # its own process group: a Ctrl-C meant for pytest reaches Redis through stop()
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - one libc call, no locks taken
        )
        try:
            self._wait_until_ready(timeout)
        except BaseException:
            # an interrupted start must not leave the process behind
            self.stop()
            raise

    def _wait_until_ready(self, timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start-up:\n{self.output()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer on {self.port} in {timeout} s")
            time.sleep(0.02)  # polling a port that is not open yet

    def ping(self) -> bool:
        """Whether the server answers PING right now."""
        client = redis.Redis(host=self.host, port=self.port, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def output(self) -> str:
        """The tail of the server's log (for error messages)."""
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open and nothing answers."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Thaw a paused server (SIGCONT)."""
        os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        """End the server at once (SIGKILL), as a crash would."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and wait for it."""
        stop_process(self._process)
        self._process = None

    def restart(self) -> None:
        """Stop the server if it runs and start an empty one on the same port."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and remove the scratch directory if this object made it."""
        self.stop()
        if self._own_scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


__all__ = ["REDIS_SERVER_ENV", "EmbeddedRedis", "find_redis_server"]
