"""Running the app on a socket, and stopping it gracefully on SIGTERM/SIGINT.

aiohttp's own `run_app` stops reading from open connections as soon as a signal
arrives, so an upload in flight would stall and be cut. Here the listening
socket closes first, in-flight requests get `shutdown_grace_s` to finish, and
requests still running after that are cancelled and answered 503 (each one
logged), and only then does the app (and its job runner) shut down.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from .app import create_app
from .config import Settings
from .hooks import Hooks
from .logs import AccessLogger
from .web.keys import IN_FLIGHT, LIVE
from .web.protocol import GuardedAppRunner

log = logging.getLogger(__name__)

#: After cutting requests off, how long their 503 answers get to be written.
CUT_OFF_WAIT_S = 1.0


class ListenError(Exception):
    """The address cannot be bound (in use, or not ours)."""


async def serve(settings: Settings, where: str = "", hooks: Hooks | None = None) -> None:
    """`where`: what to say once started (the version, the data folder, the settings' source);
    `hooks`: faults a test injects (never in production)."""
    app = create_app(settings, hooks)
    grace_s = settings.http.shutdown_grace_s
    runner = GuardedAppRunner(
        app,
        settings.http,
        handle_signals=False,
        access_log_class=AccessLogger,
        access_log=logging.getLogger("videosvc.access"),
        # In-flight requests already had `grace_s` (below); aiohttp need not wait again.
        shutdown_timeout=1.0,
    )
    await runner.setup()  # start-up: ffmpeg check, database, pool; errors propagate
    try:
        site = web.TCPSite(runner, settings.http.host, settings.http.port)
        try:
            await site.start()
        except OSError as e:
            raise ListenError(
                f"cannot listen on {settings.http.host}:{settings.http.port}: {e.strerror}"
            ) from None
        if where:
            log.info("%s", where)
        for address in runner.addresses:
            host = f"[{address[0]}]" if ":" in str(address[0]) else address[0]
            base = f"http://{host}:{address[1]}"
            log.info("listening on %s/ (the page); the API and its docs: %s/swagger", base, base)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()

        in_flight = app[IN_FLIGHT]
        log.info("stopping: no new connections; %d request(s) in flight", in_flight.count)
        await site.stop()
        if LIVE in app:
            app[LIVE].close()  # streams never finish by themselves: end them, clients reconnect elsewhere
        if not await in_flight.wait_idle(grace_s):
            log.warning("%d request(s) still running after %g s; cutting them off", in_flight.count, grace_s)
            in_flight.cut_off()  # each answers 503 and is logged
            await in_flight.wait_idle(CUT_OFF_WAIT_S)
    finally:
        await runner.cleanup()
    log.info("stopped")
