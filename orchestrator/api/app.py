"""The HTTP API of the read-only order view: what customer-service tools ask about an order.

    GET /orders/{order_id}              current state (404 when status-sync never saw the order)
    GET /orders/{order_id}/timeline     every stored event of the order, in recorded order
    GET /orders/{order_id}/explanation  the latest plan, as JSON and in words
    GET /healthz                        200 while the database answers, else 503

Read-only and unauthenticated: it binds to 127.0.0.1 unless told otherwise,
and anything exposing it further must put authentication in front of it
(order states, addresses in plans and reasons are customer data). Only GET
(and HEAD) are routed, so every other method gets 405 from aiohttp itself.
Every answer, errors included, is JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import structlog
from aiohttp import web

from orchestrator.api.queries import order_explanation, order_state, order_timeline

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8081
POOL: web.AppKey[asyncpg.Pool] = web.AppKey("pool", asyncpg.Pool)

_log = structlog.get_logger("orchestrator.api")
#: What a database that is down or unreachable raises; answered with 503, not a 500 traceback.
_DATABASE_DOWN = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, TimeoutError)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """`body` as JSON (orjson), as the order API and the promise API answer."""
    # OPT_UTC_Z: timestamps read as "...Z", the same as the command line prints them.
    return web.Response(
        body=orjson.dumps(body, option=orjson.OPT_UTC_Z),
        status=status,
        content_type="application/json",
        headers=headers,
    )


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # Keep Allow on a 405 so a client learns which methods there are.
        kept = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return json_response({"error": exc.reason}, status=exc.status, headers=kept)
    except _DATABASE_DOWN as exc:
        _log.warning("database unavailable", path=request.path, error=repr(exc))
        return json_response({"error": "database unavailable"}, status=503)


async def _state(request: web.Request) -> web.Response:
    order_id = request.match_info["order_id"]
    state = await order_state(request.app[POOL], order_id)
    if state is None:
        return json_response({"error": f"unknown order {order_id}"}, status=404)
    return json_response(state)


async def _timeline(request: web.Request) -> web.Response:
    order_id = request.match_info["order_id"]
    events = await order_timeline(request.app[POOL], order_id)
    if not events:
        return json_response({"error": f"no events recorded for order {order_id}"}, status=404)
    return json_response({"order_id": order_id, "events": events})


async def _explanation(request: web.Request) -> web.Response:
    order_id = request.match_info["order_id"]
    explanation = await order_explanation(request.app[POOL], order_id)
    if explanation is None:
        return json_response({"error": f"no plan recorded for order {order_id}"}, status=404)
    return json_response(explanation)


async def _healthz(request: web.Request) -> web.Response:
    await request.app[POOL].fetchval("SELECT 1")
    return json_response({"status": "ok"})


def build_app(pool: asyncpg.Pool) -> web.Application:
    """The application over an open pool (the caller owns the pool and closes it)."""
    app = web.Application(middlewares=[_json_errors])
    app[POOL] = pool
    app.router.add_get("/orders/{order_id}", _state)
    app.router.add_get("/orders/{order_id}/timeline", _timeline)
    app.router.add_get("/orders/{order_id}/explanation", _explanation)
    app.router.add_get("/healthz", _healthz)
    return app


@dataclass
class RunningApi:
    """A started API server: where it listens, and how to stop it."""

    runner: web.AppRunner
    pool: asyncpg.Pool

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """(host, port) of every listening socket; the real port when 0 was asked for."""
        return [(str(a[0]), int(a[1])) for a in self.runner.addresses]

    async def close(self, pool_grace_s: float = 5.0) -> None:
        """Stop listening, then close the pool: gracefully for `pool_grace_s`, then at once.

        A graceful close waits on the server's answer for every connection; Ctrl-C must stop the
        API within seconds even when the database is slow to answer or gone.
        """
        await self.runner.cleanup()
        try:
            await asyncio.wait_for(self.pool.close(), pool_grace_s)
        except TimeoutError:
            self.pool.terminate()


async def start_api(database_url: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> RunningApi:
    """Open a pool and start listening; port 0 picks a free port (see `RunningApi.addresses`)."""
    # A handful of connections is plenty for people looking orders up; command_timeout keeps a
    # stuck query from holding a request forever.
    pool: asyncpg.Pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4, command_timeout=30)
    # Ctrl-C should stop it within seconds, not wait aiohttp's default minute for slow clients.
    runner = web.AppRunner(build_app(pool), access_log=None, shutdown_timeout=5)
    try:
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        await pool.close()
        raise
    return RunningApi(runner, pool)


async def serve_api(
    database_url: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    ready: Callable[[list[tuple[str, int]]], None] | None = None,
) -> None:
    """Serve the API until cancelled (Ctrl-C under asyncio.run), then close the socket and the pool.

    `ready` is called with the listening addresses once the socket is bound, so a caller announces
    only an address that really answers.
    """
    api = await start_api(database_url, host, port)
    try:
        if ready is not None:
            ready(api.addresses)
        await asyncio.Event().wait()
    finally:
        # A failure while closing must not replace the cancellation (or error) that got us here.
        with contextlib.suppress(Exception):
            await api.close()


__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "RunningApi",
    "build_app",
    "json_response",
    "serve_api",
    "start_api",
]
