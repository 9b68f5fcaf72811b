"""The small HTTP server every worker process runs: /metrics, /healthz, /readyz.

/healthz answers while the event loop turns (liveness: restart me if not).
/readyz answers 200 only while every stage in the process is consuming
normally and 503 while one is starting, backing off after a fault, or
stopped (readiness: do not count me as capacity).

Read-only: only GET (and the HEAD aiohttp adds to it) is routed, so any other
method gets 405. It listens on `Settings.http_host`, 127.0.0.1 unless
ORCHESTRATOR_HTTP_HOST says otherwise (e.g. 0.0.0.0 where Prometheus scrapes
from another host).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from orchestrator.runtime.metrics import RuntimeMetrics

Readiness = Callable[[], dict[str, bool]]


def build_app(metrics: RuntimeMetrics, readiness: Readiness) -> web.Application:
    async def metrics_view(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": metrics.content_type})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        stages = readiness()
        ready = bool(stages) and all(stages.values())
        return web.json_response({"ready": ready, "stages": stages}, status=200 if ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def start_http(metrics: RuntimeMetrics, readiness: Readiness, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(build_app(metrics, readiness), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner
