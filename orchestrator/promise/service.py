"""The promise service: its views of the ledger and the network, and the HTTP API over them.

    POST /v1/promise        quote a cart (PromiseRequest -> PromiseResponse)
    GET  /v1/availability   available to promise per SKU (?sku=A&sku=B)
    GET  /openapi.json      the OpenAPI document of this API
    GET  /healthz           200 once every view has caught up with its topics, else 503
    GET  /metrics           Prometheus metrics of this process

No request touches the database or the broker: every answer comes from the
views in memory (`PromiseLedgerView`, the network view, and the routing
risk and deployed policies read every few seconds, as decide-node reads them). Like the order API it has no
authentication and binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import ValidationError

from orchestrator.api.app import json_response
from orchestrator.contract.base import EventPayload
from orchestrator.domain.network import NetworkView
from orchestrator.domain.policy import Policy
from orchestrator.native import decision_core
from orchestrator.promise.ledger import PromiseLedger
from orchestrator.promise.models import AvailabilityResponse, PromiseRequest
from orchestrator.promise.openapi import openapi_document
from orchestrator.promise.quote import answer_json, availability, promise_answer
from orchestrator.runtime.views import FollowedTopics, TopicView
from orchestrator.settings import Settings
from orchestrator.stages.common import INVENTORY_UPDATES, QUEUES, RESERVATIONS, network_view
from orchestrator.stages.learning_store import RiskView
from orchestrator.stages.lookahead_view import LookaheadView
from orchestrator.stages.policy_store import PolicyView

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8082
MAX_BODY_BYTES = 256 * 1024
MAX_SKUS = 100

_log = structlog.get_logger("orchestrator.promise")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AnyView = FollowedTopics | RiskView | PolicyView | LookaheadView


class PromiseLedgerView(FollowedTopics):
    """The ledger as reserve keeps it, folded from inventory updates, reservations and what the
    queues are owed (see ledger.py)."""

    def __init__(self) -> None:
        super().__init__("promise-ledger", (INVENTORY_UPDATES, RESERVATIONS, QUEUES))
        self.ledger = PromiseLedger()

    def apply(self, data: EventPayload, at: datetime) -> None:
        self.ledger.apply(data, at)


@dataclass
class PromiseMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "orchestrator_promise_requests_total",
            "Promise API requests by endpoint and HTTP status.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "orchestrator_promise_seconds",
            "Time to answer a promise request (decision and encoding).",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.options = Counter(
            "orchestrator_promise_options_total",
            "Delivery options quoted, by the outcome the decision gave.",
            ["outcome"],
            registry=self.registry,
        )
        self.ledger_events = Gauge(
            "orchestrator_promise_ledger_events",
            "Inventory and reservation events the in-memory ledger has applied.",
            registry=self.registry,
        )


@dataclass
class PromiseState:
    """What a request reads: the views, the policy, and where to count."""

    ledger: PromiseLedgerView
    network: TopicView[NetworkView]
    risk: RiskView
    #: The routing policy decide-node plans by: the deployed active one, else the policy file.
    policies: PolicyView
    #: Opportunity costs, when the active policy looks ahead (read every few minutes, as decide-node does).
    lookahead: LookaheadView
    metrics: PromiseMetrics = field(default_factory=PromiseMetrics)
    #: "compiled", or "pure: ..." with why (orchestrator/native.py): /healthz says it.
    decision_core: str = field(default_factory=decision_core)

    @property
    def views(self) -> tuple[AnyView, ...]:
        return (self.ledger, self.network, self.risk, self.policies, self.lookahead)

    @property
    def ready(self) -> bool:
        return all(view.ready for view in self.views)

    @property
    def topics(self) -> frozenset[str]:
        """The Kafka topics the views read whole (the catalog's `readers: [promise]`, its ACLs)."""
        return frozenset(t for view in self.views if isinstance(view, FollowedTopics) for t in view.topics)


STATE: web.AppKey[PromiseState] = web.AppKey("promise_state", PromiseState)


def _problem(status: int, title: str, detail: str) -> web.Response:
    return json_response({"status": status, "title": title, "detail": detail}, status=status)


def _validation_detail(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE]
    endpoint = request.match_info.route.resource.canonical if request.match_info.route.resource else "other"
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _problem(exc.status, exc.reason, exc.text or exc.reason)
    state.metrics.requests.labels(endpoint, str(response.status)).inc()
    return response


async def _promise(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if not state.ready:
        return _problem(503, "not ready", "the views are still catching up with their topics")
    raw = await request.read()
    try:
        body = PromiseRequest.model_validate(orjson.loads(raw))
    except orjson.JSONDecodeError as exc:
        return _problem(400, "not JSON", f"the body is not JSON: {exc}")
    except ValidationError as exc:
        return _problem(400, "invalid promise request", _validation_detail(exc))
    started = time.perf_counter()
    now = datetime.now(UTC)
    skus = frozenset(line.sku for line in body.cart)
    policy, network = state.policies.active, state.network.state
    answer = promise_answer(
        body,
        network=network,
        stock=state.ledger.ledger.stock(skus),
        capacity_used=state.ledger.ledger.node_load(network, now),
        policy=policy,
        now=now,
        risk=state.risk.state,
        opportunity=state.lookahead.prices_for(policy),
    )
    body_json = answer_json(answer)
    state.metrics.seconds.observe(time.perf_counter() - started)
    for option in answer["options"]:
        state.metrics.options.labels(option["outcome"].value).inc()
    return web.Response(body=body_json, content_type="application/json")


async def _availability(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if not state.ready:
        return _problem(503, "not ready", "the views are still catching up with their topics")
    skus = list(dict.fromkeys(request.query.getall("sku", [])))
    if not skus or len(skus) > MAX_SKUS:
        return _problem(400, "sku required", f"give 1 to {MAX_SKUS} `sku` query parameters")
    ledger = state.ledger.ledger
    answer = AvailabilityResponse(
        as_of=datetime.now(UTC),
        ledger_events=ledger.applied,
        skus=availability(ledger.stock(frozenset(skus)), skus),
    )
    return web.Response(body=answer.model_dump_json(), content_type="application/json")


async def _openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())


async def _healthz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if not state.ready:
        return _problem(503, "not ready", "the views are still catching up with their topics")
    return json_response(
        {"status": "ok", "ledger_events": state.ledger.ledger.applied, "decision_core": state.decision_core}
    )


async def _metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.metrics.ledger_events.set(state.ledger.ledger.applied)
    return web.Response(
        body=generate_latest(state.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def build_app(state: PromiseState) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=MAX_BODY_BYTES)
    app[STATE] = state
    app.router.add_post("/v1/promise", _promise)
    app.router.add_get("/v1/availability", _availability)
    app.router.add_get("/openapi.json", _openapi)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    return app


@dataclass
class RunningPromise:
    runner: web.AppRunner
    state: PromiseState
    stop: asyncio.Event
    starting: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [(str(a[0]), int(a[1])) for a in self.runner.addresses]

    async def close(self) -> None:
        self.stop.set()
        for task in self.starting:
            task.cancel()
        await self.runner.cleanup()
        for view in self.state.views:
            with contextlib.suppress(Exception):
                await view.close()


def promise_state(policy: Policy) -> PromiseState:
    """The views a promise service answers from, not started yet."""
    network = network_view()
    policies = PolicyView(policy)
    return PromiseState(
        ledger=PromiseLedgerView(),
        network=network,
        risk=RiskView(policy.learning),
        policies=policies,
        lookahead=LookaheadView(lambda: (policies.active,), lambda: network.state),
    )


async def start_promise(
    settings: Settings, policy: Policy, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
) -> RunningPromise:
    """Start the views (they read their topics from the beginning in the background) and the server."""
    stop = asyncio.Event()
    state = promise_state(policy)
    runner = web.AppRunner(build_app(state), access_log=None, shutdown_timeout=5)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    running = RunningPromise(runner, state, stop)
    for view in state.views:
        # Each catches up on its own; /healthz answers 503 until all have.
        running.starting.append(
            asyncio.create_task(_start_view(view, settings, stop), name=f"start:{view.name}")
        )
    running.starting.append(asyncio.create_task(_freeze_when_ready(state), name="promise:gc-freeze"))
    return running


async def _freeze_when_ready(state: PromiseState) -> None:
    """Once the views hold the ledger and the network, keep the garbage collector off them.

    Those are hundreds of thousands of long-lived objects; a full collection walking them all
    paused requests by tens of milliseconds (the p99 of `bench.promise`). Objects created later,
    ledger changes included, are collected as usual.
    """
    while not state.ready:  # noqa: ASYNC110 - the views say ready by a flag, not an event
        await asyncio.sleep(0.1)
    gc.collect()
    gc.freeze()


async def _start_view(view: AnyView, settings: Settings, stop: asyncio.Event) -> None:
    try:
        await view.start(settings, stop)
    except Exception as exc:
        _log.error("view failed to start", view=view.name, error=repr(exc))
        raise


async def serve_promise(
    settings: Settings,
    policy: Policy,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    ready: Callable[[list[tuple[str, int]]], None] | None = None,
) -> None:
    """Serve until cancelled (Ctrl-C under asyncio.run)."""
    running = await start_promise(settings, policy, host, port)
    try:
        if ready is not None:
            ready(running.addresses)
        await asyncio.Event().wait()
    finally:
        with contextlib.suppress(Exception):
            await running.close()


__all__ = [
    "DEFAULT_PORT",
    "PromiseLedgerView",
    "PromiseState",
    "RunningPromise",
    "build_app",
    "promise_state",
    "serve_promise",
    "start_promise",
]
