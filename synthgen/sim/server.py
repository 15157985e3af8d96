"""The sim's aiohttp application, served from a background thread (`SimServer`) or in the foreground (`serve`)."""

from __future__ import annotations

import asyncio
import ipaddress
import threading
from typing import Any

from aiohttp import web

from synthgen.aio import new_event_loop
from synthgen.sim.batch import add_batch_routes
from synthgen.sim.config import SimConfig
from synthgen.sim.handlers import SimHandlers

_SHUTDOWN_GRACE = 0.25  # seconds stop() lets in-flight requests finish before cancelling them


_SIM = web.AppKey("synthgen_sim", SimHandlers)


def build_app(config: SimConfig) -> web.Application:
    """The aiohttp application of the simulated server."""
    sim = SimHandlers(config)
    app = web.Application()
    app[_SIM] = sim
    app.router.add_get("/v1/models", sim.models)
    app.router.add_post("/v1/chat/completions", sim.chat)
    app.router.add_post("/v1/completions", sim.completions)
    if config.capacity:
        app.router.add_get("/props", sim.props)
        app.router.add_get("/slots", sim.slots_route)
        app.router.add_get("/health", sim.health)
    app.router.add_get("/sim/stats", sim.stats)
    app.router.add_get("/sim/bodies", sim.bodies_route)
    app.router.add_post("/sim/reset", sim.reset_route)
    add_batch_routes(app, sim)
    return app


class SimServer:
    """The sim on a loopback port, served from a background thread: `with SimServer(config) as sim: ...`."""

    def __init__(self, config: SimConfig | None = None, port: int = 0) -> None:
        self.config = config or SimConfig()
        self._app = build_app(self.config)
        self._wanted_port, self._port = port, 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        """The TCP port it listens on."""
        if not self._port:
            raise RuntimeError("the sim server is not running; call start() or use it in a `with` block")
        return self._port

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, e.g. http://127.0.0.1:PORT/v1."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> SimServer:
        """Start serving; returns once the port is open. A server runs once: make a new one to run again."""
        if self._thread is not None or self._ready.is_set():
            raise RuntimeError("this SimServer has already been started; make a new one")
        self._thread = threading.Thread(target=self._run, name="synthgen-sim", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def stop(self) -> None:
        """Stop serving; requests still in flight get a short grace period, then are cancelled."""
        if self._thread is None:
            return
        if self._loop is not None and self._stopping is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join()
        self._thread, self._port = None, 0

    def stats(self) -> dict[str, Any]:
        """The server's counters (as GET /sim/stats returns them)."""
        sim = self._app[_SIM]
        if self._thread is None or self._loop is None:
            return sim.snapshot()

        async def snapshot() -> dict[str, Any]:  # read on the server's loop, never mid-update
            return sim.snapshot()

        return asyncio.run_coroutine_threadsafe(snapshot(), self._loop).result(timeout=10)

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = self._loop = new_event_loop()
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # start() re-raises it in the caller's thread
            self._error = exc
        finally:
            self._ready.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        runner = web.AppRunner(self._app, access_log=None, handler_cancellation=True,
                               shutdown_timeout=_SHUTDOWN_GRACE)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", self._wanted_port).start()
            self._port = runner.addresses[0][1]
            self._ready.set()
            await self._stopping.wait()
        finally:
            await runner.cleanup()


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(config: SimConfig, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the sim in the foreground until interrupted; it binds loopback addresses only."""
    if not _is_loopback(host):
        raise ValueError(f"the sim server binds loopback only (127.0.0.1, ::1 or localhost), not {host!r}")
    web.run_app(build_app(config), host=host, port=port, loop=new_event_loop(), access_log=None,
                handler_cancellation=True, shutdown_timeout=_SHUTDOWN_GRACE)
