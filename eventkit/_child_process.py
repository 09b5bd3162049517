"""What the embedded services (``EmbeddedBroker``, ``EmbeddedRedis``) share about running a
server as a child process: a free port, dying with the parent, and stopping for sure."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def die_with_parent() -> None:
    """In the child before exec: on Linux, end it if its parent dies (even by SIGKILL)."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """Stop ``process`` (SIGTERM, then SIGKILL after 5 s) and wait for it; paused or not."""
    if process is None or process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGCONT)  # a paused process cannot handle SIGTERM
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
