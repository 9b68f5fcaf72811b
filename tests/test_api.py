"""The read-only order view on the real PostgreSQL: the queries, the HTTP API and `orchestrator timeline`.

Each test writes its own order's rows into status-sync's and decide-node's
tables (as those stages would) under a fresh order id, so tests never see each
other's data, and asserts on what the API and the command line say about it.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web

from orchestrator.api.app import DEFAULT_HOST, RunningApi, build_app, serve_api, start_api
from orchestrator.api.queries import order_explanation, order_state, order_timeline, timeline_text
from orchestrator.contract.common import OrderState
from orchestrator.contract.examples import example
from orchestrator.contract.pipeline import PlanDecided, StageStatus
from orchestrator.runtime import http as worker_http
from orchestrator.runtime.metrics import RuntimeMetrics
from orchestrator.settings import Settings
from tests.support import free_port

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 10, 9, 0, 0, 123456, tzinfo=UTC)
#: The node the example plan ships from.
NODE = "DC-LEEDS"


@dataclass(frozen=True)
class Event:
    source: str
    event_type: str
    topic: str
    occurred_at: datetime
    summary: str


def story() -> list[Event]:
    """An order's events in the order status-sync records them.

    The WMS pick event is recorded after the release report but happened before it (a late
    delivery from the WMS): the timeline follows the record, not the clocks.
    """
    return [
        Event("oms", "order.created.v1", "oms.orders.v1", T0, "OMS created the order (web, 2 line(s))"),
        Event(
            "orchestrator/decide-node",
            "plan.decided.v1",
            "orchestrator.plans.v1",
            T0 + timedelta(milliseconds=40),
            f"plan 2 decided: ship, 1 shipment(s) from {NODE}",
        ),
        Event(
            "orchestrator/release",
            "order.stage_status.v1",
            "orchestrator.status.v1",
            T0 + timedelta(seconds=2),
            "release: released",
        ),
        Event(
            "wms-leeds",
            "wms.picked.v1",
            "wms.events.v1",
            T0 + timedelta(seconds=1),
            f"wms picked ({NODE})",
        ),
    ]


def plan_for(order_id: str, version: int) -> PlanDecided:
    base = example("plan.decided.v1")
    assert isinstance(base, PlanDecided)
    assert [s.node_id for s in base.shipments] == [NODE]
    return base.model_copy(
        update={
            "order_id": order_id,
            "plan_id": f"{order_id}-p{version}",
            "plan_version": version,
            "attempt": version - 1,
            "excluded_nodes": ("STORE-LEEDS-01",) if version > 1 else (),
            "order": base.order.model_copy(update={"order_id": order_id}),
            "shipments": tuple(
                s.model_copy(update={"shipment_id": f"{order_id}-p{version}-{s.node_id}"})
                for s in base.shipments
            ),
        }
    )


def payload_of(event: Event, order_id: str) -> str:
    """A real payload for each stored event: the event store holds nothing a stage could not have written."""
    if event.event_type == "plan.decided.v1":
        return plan_for(order_id, 2).model_dump_json()
    if event.event_type == "order.stage_status.v1":
        return StageStatus(
            order_id=order_id,
            state=OrderState.RELEASED,
            stage="release",
            sequence=1,
            occurred_at=event.occurred_at,
        ).model_dump_json()
    return example(event.event_type).model_copy(update={"order_id": order_id}).model_dump_json()


@pytest.fixture
async def order_id(database_url: str) -> AsyncIterator[str]:
    """A released order with four stored events and two plans (the second a re-decide)."""
    oid = f"ORD-API-{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            for e in story():
                await conn.execute(
                    "INSERT INTO status_events (event_id, order_id, event_type, source, topic, occurred_at,"
                    " causation_id, correlation_id, summary, payload)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    str(uuid.uuid4()),
                    oid,
                    e.event_type,
                    e.source,
                    e.topic,
                    e.occurred_at,
                    None,
                    oid,
                    e.summary,
                    payload_of(e, oid),
                )
            await conn.execute(
                "INSERT INTO status_orders (order_id, state, sequence, reasons, stage) VALUES ($1, $2, $3, $4, $5)",
                oid,
                "released",
                1,
                "[]",
                "release",
            )
            for version in (1, 2):
                plan = plan_for(oid, version)
                await conn.execute(
                    "INSERT INTO decide_plans (order_id, plan_version, sequence, outcome, plan_json, decided_at)"
                    " VALUES ($1, $2, $3, $4, $5, $6)",
                    oid,
                    version,
                    plan.sequence,
                    plan.outcome.value,
                    plan.model_dump_json(),
                    plan.decided_at,
                )
    finally:
        await conn.close()
    yield oid


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[str]:
    """The API on a free port with the default host; yields its base URL."""
    running = await start_api(database_url, port=0)
    try:
        [(host, port)] = running.addresses
        assert host == "127.0.0.1"  # read-only and unauthenticated: local only unless asked
        yield f"http://{host}:{port}"
    finally:
        await running.close()


async def get(url: str, method: str = "GET") -> tuple[int, Any, Mapping[str, str]]:
    async with aiohttp.ClientSession() as http, http.request(method, url) as response:
        assert response.content_type == "application/json"
        return response.status, orjson.loads(await response.read()), response.headers


# --------------------------------------------------------------------------------------------- queries


async def test_the_queries_read_state_timeline_and_latest_plan(db: asyncpg.Connection, order_id: str) -> None:
    state = await order_state(db, order_id)
    assert state is not None
    assert (state["state"], state["sequence"], state["reasons"], state["stage"]) == (
        "released",
        1,
        [],
        "release",
    )

    events = await order_timeline(db, order_id)
    assert [e["summary"] for e in events] == [e.summary for e in story()]
    assert [e["position"] for e in events] == sorted(e["position"] for e in events)

    explanation = await order_explanation(db, order_id)
    assert explanation is not None
    assert (explanation["plan_version"], explanation["plans"]) == (2, 2)

    assert await order_state(db, "ORD-API-NOBODY") is None
    assert await order_timeline(db, "ORD-API-NOBODY") == []
    assert await order_explanation(db, "ORD-API-NOBODY") is None


def test_the_timeline_text_names_the_state_reasons() -> None:
    text = timeline_text(
        "ORD-1",
        {
            "state": "on_hold",
            "sequence": 2,
            "stage": "validate",
            "updated_at": T0,
            "reasons": [{"code": "fraud_review", "message": "order value over 5000.00"}],
        },
        [],
    )
    assert text.splitlines() == [
        "Order ORD-1: 0 event(s)",
        "Current state: on_hold (transition 2, by validate, since 2025-03-10T09:00:00.123Z)",
        "  fraud_review: order value over 5000.00",
    ]


# --------------------------------------------------------------------------------------------- HTTP API


async def test_the_api_answers_state_timeline_and_explanation(api: str, order_id: str) -> None:
    status, state, _ = await get(f"{api}/orders/{order_id}")
    assert status == 200
    assert state["order_id"] == order_id
    assert (state["state"], state["sequence"], state["stage"], state["reasons"]) == (
        "released",
        1,
        "release",
        [],
    )
    assert state["updated_at"].endswith("Z")

    status, timeline, _ = await get(f"{api}/orders/{order_id}/timeline")
    assert status == 200
    events = timeline["events"]
    assert [(e["source"], e["event_type"], e["topic"], e["summary"]) for e in events] == [
        (e.source, e.event_type, e.topic, e.summary) for e in story()
    ]
    assert [e["position"] for e in events] == sorted(e["position"] for e in events)
    assert events[0]["occurred_at"] == "2025-03-10T09:00:00.123456Z"
    assert {"event_id", "causation_id", "recorded_at"} <= set(events[0])

    status, explanation, _ = await get(f"{api}/orders/{order_id}/explanation")
    assert status == 200
    assert explanation["plan_version"] == 2
    assert explanation["plans"] == 2
    assert explanation["plan"]["order_id"] == order_id
    assert explanation["plan"]["shipments"][0]["node_id"] == NODE
    assert f"  1. {NODE} ({order_id}-p2-{NODE})" in explanation["text"].splitlines()
    assert f"Order {order_id}, plan {order_id}-p2 (version 2, attempt 1)" in explanation["text"]
    assert "Excluded by re-decide: STORE-LEEDS-01" in explanation["text"]


async def test_an_unknown_order_is_a_json_404(api: str) -> None:
    for path in ("", "/timeline", "/explanation"):
        status, body, _ = await get(f"{api}/orders/ORD-API-NOBODY{path}")
        assert status == 404, path
        assert "ORD-API-NOBODY" in body["error"]
    status, body, _ = await get(f"{api}/nowhere")
    assert (status, body) == (404, {"error": "Not Found"})


async def test_only_get_is_allowed(api: str, order_id: str) -> None:
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        for path in (f"/orders/{order_id}", f"/orders/{order_id}/timeline", "/healthz"):
            status, body, headers = await get(f"{api}{path}", method)
            assert status == 405, (method, path)
            assert body == {"error": "Method Not Allowed"}
            assert "GET" in headers["Allow"]
    status, body, _ = await get(f"{api}/healthz")
    assert (status, body) == (200, {"status": "ok"})


async def test_the_workers_http_server_is_read_only_too() -> None:
    """/metrics, /healthz and /readyz of every worker: GET and HEAD answer, anything else is 405."""
    from aiohttp import web

    runner = web.AppRunner(worker_http.build_app(RuntimeMetrics(), lambda: {"reserve": True}))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        host, port = runner.addresses[0][:2]
        async with aiohttp.ClientSession() as http:
            for path in ("/metrics", "/healthz", "/readyz"):
                for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
                    async with http.request(method, f"http://{host}:{port}{path}") as response:
                        assert response.status == 405, (method, path)
                        assert "GET" in response.headers["Allow"]
                for method in ("GET", "HEAD"):
                    async with http.request(method, f"http://{host}:{port}{path}") as response:
                        assert response.status == 200, (method, path)
    finally:
        await runner.cleanup()


def test_every_http_server_binds_localhost_by_default() -> None:
    """Unauthenticated servers: local only unless an operator asks for more."""
    from orchestrator.cli import build_parser

    assert DEFAULT_HOST == "127.0.0.1"
    for serve in (start_api, serve_api):
        assert inspect.signature(serve).parameters["host"].default == "127.0.0.1", serve
    assert build_parser().parse_args(["api"]).host == "127.0.0.1"
    assert Settings().http_host == "127.0.0.1"
    assert Settings.from_env({}).http_host == "127.0.0.1"
    assert Settings.from_env({"ORCHESTRATOR_HTTP_HOST": "0.0.0.0"}).http_host == "0.0.0.0"


async def test_healthz_is_503_when_the_database_is_gone(database_url: str) -> None:
    from aiohttp import web

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    runner = web.AppRunner(build_app(pool))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        await pool.close()
        status, body, _ = await get(f"http://{host}:{port}/healthz")
        assert (status, body) == (503, {"error": "database unavailable"})
    finally:
        await runner.cleanup()


async def test_serve_api_binds_localhost_by_default_and_stops_when_cancelled(database_url: str) -> None:
    bound: asyncio.Future[list[tuple[str, int]]] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve_api(database_url, port=free_port(), ready=bound.set_result))
    addresses = await asyncio.wait_for(bound, 10)
    assert [host for host, _ in addresses] == ["127.0.0.1"]
    [(host, port)] = addresses
    status, _, _ = await get(f"http://{host}:{port}/healthz")
    assert status == 200
    server.cancel()
    with pytest.raises(asyncio.CancelledError):
        await server
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(f"http://{host}:{port}/healthz")


# --------------------------------------------------------------------------------------------- command line


def cli_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    # Its own state folder: the checkout's .state/endpoints.json must not leak into what is tested.
    return {**base, "DATABASE_URL": database_url, "ORCHESTRATOR_STATE_DIR": str(tmp_path / "state")}


async def run_cli(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator.cli",
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_timeline_command_prints_the_story_then_the_state(
    database_url: str, order_id: str, tmp_path: Path
) -> None:
    code, out, err = await run_cli("timeline", order_id, env=cli_env(database_url, tmp_path), cwd=tmp_path)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"Order {order_id}: 4 event(s)"
    columns = [re.split(r"\s{2,}", line.strip()) for line in lines[1:5]]
    assert columns == [
        [
            e.occurred_at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{e.occurred_at.microsecond // 1000:03d}Z",
            e.source,
            e.event_type,
            e.summary,
        ]
        for e in story()
    ]
    assert columns[0][0] == "2025-03-10T09:00:00.123Z"
    assert re.fullmatch(
        r"Current state: released \(transition 1, by release, since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\)",
        lines[5],
    )
    assert len(lines) == 6


async def test_timeline_command_exits_1_for_an_unknown_order(database_url: str, tmp_path: Path) -> None:
    code, out, err = await run_cli(
        "timeline", "ORD-API-NOBODY", env=cli_env(database_url, tmp_path), cwd=tmp_path
    )
    assert code == 1
    assert out == ""
    assert "unknown order ORD-API-NOBODY" in err


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def test_api_command_serves_until_ctrl_c(database_url: str, order_id: str, tmp_path: Path) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator.cli",
        "api",
        "--port",
        str(port),
        env=cli_env(database_url, tmp_path),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # Ctrl-C as a terminal delivers it: a suite started in the background (`cmd &`) has SIGINT
        # ignored, which a child inherits, and Python then leaves it ignored.
        preexec_fn=_default_sigint,
    )
    try:
        assert proc.stdout is not None
        announced = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert f"http://127.0.0.1:{port}" in announced
        assert "no authentication" in announced
        status, state, _ = await get(f"http://127.0.0.1:{port}/orders/{order_id}")
        assert (status, state["state"]) == (200, "released")
        proc.send_signal(signal.SIGINT)
        stopped = asyncio.ensure_future(proc.communicate())
        done, _ = await asyncio.wait({stopped}, timeout=15)
        if not done:
            proc.kill()
            _, err = await stopped
            raise AssertionError(f"the API did not stop within 15 s of Ctrl-C; its stderr:\n{err.decode()}")
        _, err = stopped.result()
        assert proc.returncode == 0, err.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_stopping_the_api_gives_a_stuck_pool_seconds_not_forever() -> None:
    """A graceful close waits on the database for every connection; past the grace it is cut."""

    class StuckPool:
        terminated = False

        async def close(self) -> None:
            await asyncio.Event().wait()  # the server never answers

        def terminate(self) -> None:
            self.terminated = True

    runner = web.AppRunner(web.Application())
    await runner.setup()
    pool = StuckPool()
    await asyncio.wait_for(RunningApi(runner, pool).close(pool_grace_s=0.2), 5)
    assert pool.terminated
