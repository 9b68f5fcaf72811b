"""`make run` in a CI-sized run: the stages and the simulated OMS, nodes and
carriers as separate processes on the real Kafka and PostgreSQL, a few hundred
orders, and a summary whose every count matches what is on the topics."""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest

from orchestrator.sim.live.driver import PROMISE_PORT
from orchestrator.sim.live.fleet import stage_of
from orchestrator.sim.live.tally import RESTING_RETURN_STATES, RESTING_STATES
from orchestrator.stages import ORDER_STAGES
from tests.support import REPO, free_port, headers_of, read_all

ORDERS = 240
pytestmark = [pytest.mark.timeout(420), pytest.mark.alters_shared_network]


async def _records(bootstrap: str, topic: str, prefix: str) -> list[tuple[str, dict[str, Any]]]:
    """(event type, payload) of the run's records on `topic`, in no particular order."""
    out = []
    for record in await read_all(bootstrap, topic, expect=1, timeout=60, settle=1.5):
        data = orjson.loads(record.value) if record.value else {}
        if str(data.get("order_id", "")).startswith(prefix):
            out.append((headers_of(record)["ce_type"], data))
    return out


def _by_type(records: list[tuple[str, dict[str, Any]]]) -> dict[str, int]:
    """Counts keyed like the summary: "wms.picked.v1" -> "picked"."""
    return dict(Counter(t.rsplit(".", 1)[0].split(".", 1)[1] for t, _ in records))


@pytest.fixture(scope="module")
async def live_run(
    bootstrap: str, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    state = tmp_path_factory.mktemp("live")
    summary = state / "summary.json"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "DATABASE_URL": database_url,
        "ORCHESTRATOR_STATE_DIR": str(state),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator.cli",
        "start",
        "--orders", str(ORDERS),
        "--rate", "30",
        "--http-port", str(free_port()),
        # Failures often enough that every kind of playbook runs in a short run.
        "--short-pick-rate", "0.08",
        "--node-cancel-rate", "0.03",
        "--lost-rate", "0.04",
        "--delay-rate", "0.06",
        "--closures-per-minute", "6",
        "--closure-seconds", "3",
        "--flash-sale-every", "10",
        "--summary", str(summary),
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 400)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-4000:]
    report: dict[str, Any] = orjson.loads(summary.read_bytes())
    report["stdout"] = text
    return report


async def test_every_order_is_placed_decided_and_comes_to_rest(live_run: dict[str, Any]) -> None:
    s = live_run["summary"]
    assert s["orders"]["created"] == ORDERS
    assert live_run["unsettled_orders"] == [], live_run["unsettled_orders"][:10]
    states = s["final_states"]
    assert sum(states.values()) == ORDERS
    assert set(states) <= {str(state) for state in RESTING_STATES}
    assert states.get("delivered", 0) > ORDERS * 0.7, states
    first_plans = sum(v for k, v in s["decisions"].items() if k != "held")
    # Every order that was neither held by the OMS nor cancelled straight away got a first plan.
    assert first_plans >= ORDERS - s["decisions"]["held"] - s["orders"].get("cancelled", 0)
    assert s["latency_ms"]["p50"] is not None and s["latency_ms"]["p99"] >= s["latency_ms"]["p50"]
    assert s["dead_letters"] == {}, s["dead_letter_reasons"]


async def test_the_summary_counts_are_what_is_on_the_topics(live_run: dict[str, Any], bootstrap: str) -> None:
    s, prefix = live_run["summary"], live_run["order_prefix"]
    orders = await _records(bootstrap, "oms.orders.v1", prefix)
    assert _by_type(orders) == s["orders"]
    assert sum(1 for t, d in orders if t == "order.created.v1" and d.get("holds")) == s["decisions"]["held"]

    plans = [
        d for t, d in await _records(bootstrap, "orchestrator.plans.v1", prefix) if t == "plan.decided.v1"
    ]
    assert dict(Counter(d["outcome"] for d in plans if not d.get("repair"))) == s["plan_outcomes"]
    assert sum(1 for d in plans if d.get("repair")) == s["repairs_planned"]

    work = await _records(bootstrap, "wms.work-orders.v1", prefix)
    assert sum(1 for t, _ in work if t == "workorder.released.v1") == s["work_orders"]["released"]
    assert sum(1 for t, _ in work if t == "workorder.cancel_requested.v1") == s["work_orders"].get(
        "cancel_requested", 0
    )
    assert _by_type(await _records(bootstrap, "wms.events.v1", prefix)) == s["node_events"]
    assert _by_type(await _records(bootstrap, "carrier.events.v1", prefix)) == s["carrier_events"]

    exceptions = await _records(bootstrap, "orchestrator.exceptions.v1", prefix)
    raised = Counter(d["kind"] for t, d in exceptions if t == "exception.raised.v1")
    assert dict(raised) == s["exceptions"]

    latest: dict[str, tuple[int, str]] = {}
    returns: dict[str, tuple[int, str]] = {}
    for t, d in await _records(bootstrap, "oms.status.v1", prefix):
        # Each return's statuses are numbered apart from its order's.
        key, seen = (d["return_id"], returns) if t == "return.status_changed.v1" else (d["order_id"], latest)
        if key not in seen or d["sequence"] > seen[key][0]:
            seen[key] = (d["sequence"], d["state"])
    assert dict(Counter(state for _, state in latest.values())) == s["final_states"]
    assert s["returns"] == {
        "authorised": len(returns),
        "states": dict(Counter(state for _, state in returns.values())),
    }


async def test_customers_sent_goods_back_and_every_return_came_to_rest(live_run: dict[str, Any]) -> None:
    returns = live_run["summary"]["returns"]
    # About one delivered parcel in twelve comes back (--return-rate 0.08 by default).
    assert returns["authorised"] >= 3, returns
    assert set(returns["states"]) <= RESTING_RETURN_STATES, returns
    assert returns["states"].get("completed", 0) >= returns["authorised"] // 2, returns
    assert "Returns: " in live_run["stdout"]


async def test_the_playbooks_ran_and_every_exception_ended_somewhere(live_run: dict[str, Any]) -> None:
    s, resolutions = live_run["summary"], live_run["resolutions"]
    # The simulated failures reached the orchestrator through the public topics...
    assert s["node_events"].get("short_picked", 0) > 0
    assert s["carrier_events"].get("lost", 0) > 0
    assert {"short_pick", "lost_parcel"} <= set(s["exceptions"])
    # ... every exception became a case, and none is left open waiting on nothing.
    assert {k: sum(v.values()) for k, v in resolutions.items()} == s["exceptions"]
    endings = Counter(ending for ends in resolutions.values() for ending, n in ends.items() for _ in range(n))
    assert not [e for e in endings if e.startswith("open")], endings
    assert endings["reroute"] > 0, endings
    assert s["repairs_planned"] >= endings["reroute"]


def test_the_terminal_shows_progress_and_a_summary_with_next_steps(live_run: dict[str, Any]) -> None:
    text = live_run["stdout"]
    assert "released" in text and "p99" in text  # progress lines while it ran (not a terminal here)
    assert f"{ORDERS} orders placed" in text
    assert "Exceptions and how they ended" in text
    assert f"orchestrator explain {live_run['order_prefix']}" in text
    assert os.path.exists(os.path.join(live_run["logs"], "sim-oms.log"))


def test_every_stage_ran_as_a_process_of_its_own(live_run: dict[str, Any]) -> None:
    """As deployed: one process per stage, each with its own /metrics port and log."""
    metrics = live_run["metrics"]
    assert sorted(stage_of(name) for name in metrics) == sorted(ORDER_STAGES)
    ports = [urlsplit(url).port for url in metrics.values()]
    assert len(set(ports)) == len(ports), ports
    assert PROMISE_PORT not in ports
    for name in metrics:
        assert os.path.getsize(os.path.join(live_run["logs"], f"{name}.log")) > 0, name
    assert f"metrics on {live_run['metrics_at']}" in live_run["stdout"]


async def test_the_promise_api_runs_beside_the_stages(live_run: dict[str, Any]) -> None:
    # Printed only once its /healthz answered 200: its views had caught up with the live topics.
    assert "promise API on http://" in live_run["stdout"], live_run["stdout"][-2000:]
