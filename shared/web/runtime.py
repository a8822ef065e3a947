"""A service's moving parts and their life: database, NATS, relay and consumers.

One composition root per service builds a :class:`Runtime` and hands it to
:func:`create_service_app`, which wires health probes, metrics and problem details.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Annotated, Any

import stamina
import structlog
import yaml
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi_offline import FastAPIOffline
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from shared.adapters.bus import asyncapi
from shared.adapters.bus.access import RELAY
from shared.adapters.bus.client import connect
from shared.adapters.bus.consumer import Consumer, ConsumerSpec
from shared.adapters.bus.relay import Relay
from shared.adapters.bus.streams import LEASE_RELEASED, WAKE_SUBJECT, declare_streams
from shared.adapters.db import create_engine
from shared.adapters.eventlog import EventLog
from shared.adapters.timers import TimerSpec, TimerWheel
from shared.domain.orgs import Organisations, load_organisations
from shared.settings import ServiceSettings
from shared.web import http
from shared.web.backlog_metrics import sample_bus, sample_database
from shared.web.tracing import configure_tracing, flush_tracing

log = structlog.get_logger("caseflow.runtime")

__all__ = ["WAKE_SUBJECT", "Runtime", "create_service_app"]


ERROR_REPEAT_SECONDS = 60.0
"""While NATS stays away, its connection error is logged again this often."""


class Runtime:
    """Connections and background tasks of one service process."""

    def __init__(
        self,
        service: str,
        settings: ServiceSettings,
        consumers: Sequence[ConsumerSpec] = (),
        timers: Sequence[TimerSpec] = (),
    ) -> None:
        self.service = service
        self.settings = settings
        self.specs = tuple(consumers)
        self.engine = create_engine(settings.database_url)
        self.log = EventLog(self.engine)
        self.nc: NATS | None = None
        self.relay_nc: NATS | None = None
        """The relay's own connection: only the relay's credential may publish events."""
        self._connect_error: str | None = None
        self._errors_said: dict[str, tuple[str, float]] = {}
        """Per NATS user, the last error logged and when (reconnect warnings rate-limited)."""
        """Why the last attempt to connect failed (readiness says it)."""
        self.consumers: list[Consumer] = []
        self.timers = TimerWheel(self.log, timers) if timers else None
        """The durable timers' wheel, when the service has timer kinds to fire."""
        self.stop = asyncio.Event()
        self.workers: list[Callable[[NATS, asyncio.Event], Coroutine[Any, Any, None]]] = []
        """More background loops that need NATS (started once it is connected)."""
        self.background: list[Callable[[asyncio.Event], Coroutine[Any, Any, None]]] = []
        """Background loops that need only the database (started at once)."""
        self.on_wake: list[Callable[[], None]] = []
        """Called when some process says it committed events (the relay's wake-up message)."""
        self.on_shutdown: list[Callable[[], Coroutine[Any, Any, None]]] = []
        """Closers run after the background work has stopped (HTTP clients, servers)."""
        self._tasks: list[asyncio.Task[None]] = []
        self._bus: asyncio.Task[None] | None = None
        self._bus_working = False
        """The bus task got past connecting: its relay and consumers run (and drain)."""

    async def start(self) -> None:
        """Connect to NATS in the background (retrying) and start relay and consumers."""
        interval = self.settings.backlog_sample_seconds
        self._tasks.append(
            asyncio.create_task(
                sample_database(self.engine, self.stop, interval), name="backlog-database"
            )
        )
        if self.timers is not None:
            # Timers need only the database: they fire while NATS is still connecting.
            self._tasks.append(asyncio.create_task(self.timers.run(self.stop), name="timers"))
        for loop in self.background:
            self._tasks.append(asyncio.create_task(loop(self.stop), name=loop.__name__))
        self._bus = asyncio.create_task(self._connect_and_run(), name="bus")
        self._tasks.append(self._bus)

    async def _reconnected(self) -> None:
        self._connect_error = None
        self._errors_said.clear()
        log.info("reconnected to NATS", server=_server(self.nc))
        for consumer in self.consumers:
            consumer.on_reconnect()

    async def _disconnected(self) -> None:
        if self.stop.is_set():
            return  # our own drain closed the connection: nothing went wrong
        log.warning("disconnected from NATS")

    async def _connect(self, user: str, seed_file: Path, **callbacks: Any) -> NATS:
        """Connect as ``user`` with its seed, retrying until the server takes it."""

        async def error(err: Exception) -> None:
            # nats-py reports a refused connection (e.g. "Authorization Violation": a seed
            # the server does not know) and permissions violations here, and keeps trying,
            # every half second while the server is away: a line per connection when its
            # error changes, and again once a minute while it lasts.
            text = f"{str(err) or type(err).__name__}"
            now = time.monotonic()
            last = self._errors_said.get(user)
            if last is None or last[0] != text or now - last[1] >= ERROR_REPEAT_SECONDS:
                log.warning("NATS error", error=f"{user}: {text}")
                self._errors_said[user] = (text, now)
            self._connect_error = f"{user}: {text}"

        async for attempt in stamina.retry_context(
            on=Exception, attempts=None, timeout=None, wait_max=2.0
        ):
            with attempt:
                nc = await connect(
                    self.settings.nats_servers,
                    user=user,
                    seed_file=seed_file,
                    name=f"caseflow-{self.service}" + ("-relay" if user == RELAY else ""),
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    error_cb=error,
                    **callbacks,
                )
                self._connect_error = None
                return nc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _connect_and_run(self) -> None:
        seed = self.settings.nats_seed_file
        if seed is None:
            log.error(
                "no NATS credential: set the service's NATS_SEED_FILE; not connecting",
                service=self.service,
            )
            return
        self.nc = await self._connect(
            self.service,
            seed,
            reconnected_cb=self._reconnected,
            disconnected_cb=self._disconnected,
        )
        js = self.nc.jetstream()
        async for attempt in stamina.retry_context(on=Exception, attempts=None, timeout=None):
            with attempt:
                await declare_streams(js, replicas=self.settings.nats_replicas)
        log.info("connected to NATS", server=_server(self.nc))
        workers = []
        await self._share_wakeups(self.nc)
        relay_seed = self.settings.nats_relay_seed_file
        if self.settings.relay and relay_seed is None:
            log.warning("no relay credential (NATS_RELAY_SEED_FILE): this process relays nothing")
        if self.settings.relay and relay_seed is not None:
            self.relay_nc = await self._connect(RELAY, relay_seed)
            relay = Relay(self.log, self.relay_nc.jetstream())
            nc = self.nc

            async def wake(msg: Msg) -> None:
                if msg.data == LEASE_RELEASED:
                    relay.lease_freed()
                else:
                    relay.wakeup.set()

            async def released() -> None:
                with contextlib.suppress(Exception):
                    await nc.publish(WAKE_SUBJECT, LEASE_RELEASED)

            relay.on_release.append(released)
            await self.nc.subscribe(WAKE_SUBJECT, cb=wake)
            workers.append(relay.run(self.stop))
        if self.on_wake:

            async def woken(_msg: Msg) -> None:
                for callback in self.on_wake:
                    callback()

            await self.nc.subscribe(WAKE_SUBJECT, cb=woken)
        for spec in self.specs:
            consumer = Consumer(spec, self.log, self.nc)
            self.consumers.append(consumer)
            workers.append(consumer.run(self.stop))
        workers.extend(worker(self.nc, self.stop) for worker in self.workers)
        workers.append(sample_bus(self.nc, self.stop, self.settings.backlog_sample_seconds))
        self._bus_working = True
        await asyncio.gather(*workers)

    async def _share_wakeups(self, nc: NATS) -> None:
        """Tell whichever process leads the relay that this one committed events.

        SQLite has no LISTEN/NOTIFY, and the leading relay may live in another process; a
        plain NATS message wakes it at once instead of at its next poll. Losing one is
        harmless: the relay still polls every second.
        """
        pending = False

        async def send() -> None:
            nonlocal pending
            pending = False
            with contextlib.suppress(Exception):
                await nc.publish(WAKE_SUBJECT, b"")

        def appended() -> None:
            nonlocal pending
            if not pending:
                pending = True
                asyncio.get_running_loop().create_task(send())

        self.log.on_append(appended)

    async def shutdown(self) -> None:
        """Stop fetching, finish what is in flight, drain NATS, close the database."""
        self.stop.set()
        if self._bus is not None and not self._bus_working:
            # Still connecting (NATS away, or refusing the credential): nothing is in
            # flight, so there is nothing to wait for.
            self._bus.cancel()
        grace = self.settings.shutdown_grace_seconds
        done, pending = await asyncio.wait(self._tasks, timeout=grace) if self._tasks else ((), ())
        for task in pending:
            task.cancel()
        for task in done:
            if not task.cancelled() and task.exception():
                log.error("background task failed", error=repr(task.exception()))
        for nc in (self.nc, self.relay_nc):
            if nc is not None and nc.is_connected:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(nc.drain(), grace)
        for close in self.on_shutdown:
            try:
                await close()
            except Exception as err:
                log.warning("closing failed", error=repr(err))
        await self.engine.dispose()
        log.info("stopped")

    async def readiness(self) -> dict[str, str]:
        """'ok' or the reason, for the database and NATS."""
        checks: dict[str, str] = {}
        try:
            await asyncio.wait_for(self.log.ping(), 2.0)
            checks["database"] = "ok"
        except Exception as err:
            checks["database"] = f"unreachable: {type(err).__name__}"
        checks["nats"] = self._nats_state()
        return checks

    def _nats_state(self) -> str:
        if self.settings.nats_seed_file is None:
            return "no credential (NATS_SEED_FILE is not set)"
        why = f": {self._connect_error}" if self._connect_error else ""
        if self.nc is None or not self.nc.is_connected:
            return "unreachable" + (why if self.nc is None else "")
        relaying = self.settings.relay and self.settings.nats_relay_seed_file is not None
        if relaying and (self.relay_nc is None or not self.relay_nc.is_connected):
            return "unreachable: the relay's connection" + (why if self.relay_nc is None else "")
        return "ok"


def _server(nc: NATS | None) -> str | None:
    """``host:port`` of the NATS server (cluster node) ``nc`` is connected to."""
    url = nc.connected_url if nc is not None else None
    return url.netloc if url is not None else None


async def get_runtime(request: Request) -> Runtime:
    """The running service's :class:`Runtime` (async: FastAPI runs a plain ``def``
    dependency in a worker thread, a hop per request for nothing)."""
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_log(request: Request) -> EventLog:
    """The event log of the running service."""
    runtime: Runtime = request.app.state.runtime
    return runtime.log


EventLogDep = Annotated[EventLog, Depends(get_log)]

probes = APIRouter(tags=["operations"])


@probes.get("/livez", summary="The process is alive")
async def livez() -> dict[str, str]:
    """Answers while the event loop runs; checks nothing else."""
    return {"status": "ok"}


@probes.get(
    "/readyz",
    summary="The log and NATS are reachable",
    response_model=None,
    responses={503: {"description": "The database or NATS does not answer (which, and why)"}},
)
async def readyz(runtime: RuntimeDep) -> JSONResponse | dict[str, Any]:
    """200 when the database and NATS answer, 503 (problem+json) when either doesn't."""
    checks = await runtime.readiness()
    if all(v == "ok" for v in checks.values()):
        return {"status": "ok", "checks": checks}
    failing = ", ".join(f"{k} {v}" for k, v in checks.items() if v != "ok")
    response = http.problem(503, f"not ready: {failing}", checks=checks)
    response.headers["Retry-After"] = str(http.RETRY_AFTER_SECONDS)
    return response


@probes.get("/asyncapi.json", summary="AsyncAPI document of the bus")
async def asyncapi_document() -> dict[str, Any]:
    """The subjects and message schemas on NATS."""
    return asyncapi.document()


class YamlResponse(PlainTextResponse):
    media_type = "application/yaml"


@probes.get(
    "/asyncapi.yaml",
    summary="AsyncAPI document of the bus, as YAML",
    response_class=YamlResponse,
    responses={200: {"content": {YamlResponse.media_type: {"schema": {"type": "object"}}}}},
)
async def asyncapi_yaml() -> YamlResponse:
    """The same document as ``/asyncapi.json``, in YAML."""
    return YamlResponse(yaml.safe_dump(asyncapi.document(), allow_unicode=True, sort_keys=False))


DOCS_ASSETS = "/docs-assets"
"""Where the API docs' scripts and styles are served (no CDN)."""


def create_service_app(
    runtime: Runtime,
    *,
    title: str,
    description: str,
    routers: Sequence[APIRouter] = (),
    organisations: Organisations | None = None,
) -> FastAPI:
    """A FastAPI app around ``runtime`` with probes, metrics and problem details.

    Staff tokens are checked against ``organisations`` (loaded from the settings' data
    folder when not given): a fault in that data stops start-up, named."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        yield
        await runtime.shutdown()

    # /docs and /redoc with Swagger UI and ReDoc served by the service itself: stations sit
    # on an intranet, where FastAPI's default pages (scripts from a CDN) stay blank.
    app = FastAPIOffline(
        title=title,
        description=description,
        version="0.1.0",
        lifespan=lifespan,
        static_url=DOCS_ASSETS,
    )
    app.state.runtime = runtime
    app.state.organisations = organisations or load_organisations(runtime.settings.data_dir)
    # Before http.install: the instrumentation rebuilds the middleware stack it finds.
    if configure_tracing(runtime.service, runtime.settings.otlp_endpoint, app, runtime.engine):

        async def flush() -> None:
            flush_tracing()

        runtime.on_shutdown.append(flush)
    http.install(app, max_body_bytes=runtime.settings.max_request_body_bytes)
    app.include_router(probes)
    for router in routers:
        app.include_router(router)
    return app
