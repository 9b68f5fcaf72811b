"""Shadow policies end to end on the real Kafka and PostgreSQL: a policy deployed in shadow plans
every order beside the active one and is recorded, but what is reserved and released is the
active policy's plan; `orchestrator shadow report` adds the rows up; promotion makes the former
shadow plan new orders, a rollback brings the old policy back, and both are recorded."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

import orchestrator.policies as packaged
from orchestrator.contract.pipeline import PlanDecided
from tests.harness import LONDON, MANCHESTER, Pipeline, ids, node, order, pipeline

pytestmark = pytest.mark.integration
__all__ = ["pipeline"]

# decide-node reads the record of policy changes this often here (5 s by default).
PIPELINE_ENV = {"ORCHESTRATOR_POLICY_REFRESH_S": "0.2"}
#: Long enough for decide-node to have read a change.
SEEN = 1.2


def _policy_file(version: str, **changes: Any) -> Path:
    """The packaged policy, learning off (as the harness runs it), with `changes`."""
    policy = yaml.safe_load(Path(packaged.__file__).with_name("default.yaml").read_text())
    policy["learning"] = {**policy.get("learning", {}), "enabled": False}
    policy.update(version=version, **changes)
    path = Path(tempfile.mkdtemp(prefix="shadow-policy-")) / f"{version}.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


async def _cli(p: Pipeline, *args: str, ok: bool = True) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator.cli",
        *args,
        env={**os.environ, "DATABASE_URL": p.database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    if ok:
        assert proc.returncode == 0, out.decode()
    else:
        assert proc.returncode == 2, out.decode()
    return out.decode()


@pytest.fixture
async def clean_record(pipeline: Pipeline) -> AsyncIterator[None]:
    """Test modules share one database: whatever this test deploys is taken out of the record
    after it, so the next module's decide-node plans by its own policy file."""
    start = await pipeline.db.fetchval("SELECT coalesce(max(id), 0) FROM decide_policy_changes")
    try:
        yield
    finally:
        await pipeline.db.execute("DELETE FROM decide_policy_changes WHERE id > $1", start)


async def _latest_plan(p: Pipeline, order_id: str) -> PlanDecided:
    raw = await p.db.fetchval(
        "SELECT plan_json FROM decide_plans WHERE order_id = $1 ORDER BY plan_version DESC LIMIT 1", order_id
    )
    return PlanDecided.model_validate_json(raw)


def _released_shape(
    work_orders: list[dict[str, Any]],
) -> list[tuple[str, str, tuple[tuple[str, str, int], ...]]]:
    return sorted(
        (
            wo["node_id"],
            wo["carrier"]["service_id"],
            tuple(sorted((x["line_id"], x["sku"], x["quantity"]) for x in wo["lines"])),
        )
        for wo in work_orders
    )


def _summary_shape(summary: dict[str, Any]) -> list[tuple[str, str, tuple[tuple[str, str, int], ...]]]:
    return sorted(
        (
            s["node_id"],
            s["service_id"],
            tuple(sorted((x["line_id"], x["sku"], x["quantity"]) for x in s["lines"])),
        )
        for s in summary["shipments"]
    )


async def _last_change(p: Pipeline) -> dict[str, Any]:
    row = await p.db.fetchrow(
        "SELECT *, now() - at AS age FROM decide_policy_changes ORDER BY id DESC LIMIT 1"
    )
    assert row is not None
    return dict(row)


async def test_a_shadow_policy_is_recorded_never_released_then_promoted_and_rolled_back(
    pipeline: Pipeline, clean_record: None
) -> None:
    n = ids("SHD")
    near, far, sku = n("DC-LONDON"), n("DC-MANCHESTER"), n("KETTLE")
    await pipeline.setup_network(
        node(near, LONDON), node(far, MANCHESTER), stock={(near, sku): 50, (far, sku): 50}
    )
    file_version = pipeline.deps.policy.version
    # The shadow sends everything to the far node: a bonus worth far more than the longer journey.
    shadow_version = f"far-first-{uuid.uuid4().hex[:6]}"
    shadow_file = _policy_file(shadow_version, ranked_nodes=[far], rank_bonus=1000.0)

    # Deployed in shadow, with who and when on record.
    out = await _cli(
        pipeline, "policy", "deploy", str(shadow_file), "--shadow", "--by", "ana", "--note", "trial"
    )
    assert f"{shadow_version} deployed in shadow" in out and "by ana" in out
    deployed = await _last_change(pipeline)
    assert (deployed["action"], deployed["role"], deployed["version"], deployed["who"], deployed["note"]) == (
        "deploy_shadow",
        "shadow",
        shadow_version,
        "ana",
        "trial",
    )
    assert yaml.safe_load(deployed["policy_yaml"])["rank_bonus"] == 1000.0
    status = await _cli(pipeline, "policy", "status")
    assert "active  the policy file" in status and f"shadow  {shadow_version}" in status
    await asyncio.sleep(SEEN)

    # Orders go through the pipeline: what is released is the active policy's plan, the near node.
    orders = [order(n(f"ORD-{i}"), [(sku, i)]) for i in (1, 2, 3)]
    await pipeline.publish(*orders)
    for o in orders:
        await pipeline.out.final_state(o.order_id, "released")
    rows = {
        r["order_id"]: r
        for r in await pipeline.db.fetch(
            "SELECT * FROM decide_shadow_plans WHERE order_id = ANY($1::text[])", [o.order_id for o in orders]
        )
    }
    assert set(rows) == {o.order_id for o in orders}, "every decision was shadowed"
    for o in orders:
        released = pipeline.out.released(o.order_id)
        row = rows[o.order_id]
        active_plan, shadow_plan = orjson.loads(row["active_plan"]), orjson.loads(row["shadow_plan"])
        plan = await _latest_plan(pipeline, o.order_id)
        assert plan.policy_version == file_version
        assert [wo["node_id"] for wo in released] == [near]
        assert _released_shape(released) == _summary_shape(active_plan), "released = the active plan"
        assert _summary_shape(shadow_plan)[0][0] == far
        assert row["differs"] and (row["active_version"], row["shadow_version"]) == (
            file_version,
            shadow_version,
        )
        assert active_plan["explanation"] and shadow_plan["explanation"], "both explanations are kept"
        assert active_plan["explanation"] == list(plan.explanation)
    # Nothing was ever reserved at the shadow's node.
    held = await pipeline.db.fetch(
        "SELECT DISTINCT node_id FROM reserve_reservations WHERE order_id = ANY($1::text[])",
        [o.order_id for o in orders],
    )
    assert {r["node_id"] for r in held} == {near}
    assert await pipeline.db.fetchval("SELECT reserved FROM reserve_ledger WHERE node_id = $1", far) == 0

    # The report's numbers are the rows' (this test's shadow version is its own).
    data = json.loads(await _cli(pipeline, "shadow", "report", "--since", "1h", "--json"))
    [pair] = [p for p in data["pairs"] if p["shadow"]["version"] == shadow_version]
    mine = list(rows.values())
    assert pair["orders"] == len(mine) and pair["differing"] == len(mine)
    assert pair["active"]["cost"] == round(sum(r["active_cost"] for r in mine), 2)
    assert pair["shadow"]["cost"] == round(sum(r["shadow_cost"] for r in mine), 2)
    assert pair["shadow"]["cost"] > pair["active"]["cost"], "the far node costs more to ship from"
    for role in ("active", "shadow"):
        assert pair[role]["shipments_per_order"] == sum(r[f"{role}_shipments"] for r in mine) / len(mine)
        assert pair[role]["promise_hit_rate"] == round(
            sum(r[f"{role}_promise_hit"] for r in mine) / len(mine), 4
        )
        assert pair[role]["split_rate"] == 0.0
        assert pair[role]["capacity_breaches"] == 0
    listed = {d["order_id"]: d for d in data["differing"]}
    assert {o.order_id for o in orders} <= set(listed)
    text = await _cli(pipeline, "shadow", "report", "--since", "1h")
    assert f"SHADOW {shadow_version}" in text and "split rate" in text and "promise hit rate" in text
    assert f"{orders[0].order_id} (plan 1," in text
    for sentence in (
        *orjson.loads(mine[0]["active_plan"])["explanation"],
        *orjson.loads(mine[0]["shadow_plan"])["explanation"],
    ):
        assert sentence in text

    # Promotion: one command, recorded; new orders are planned by the former shadow.
    out = await _cli(pipeline, "policy", "promote", "--by", "ben")
    assert f"{shadow_version} is active" in out and "replacing the policy file" in out
    promoted = await _last_change(pipeline)
    assert (promoted["action"], promoted["role"], promoted["version"], promoted["who"]) == (
        "promote",
        "active",
        shadow_version,
        "ben",
    )
    assert promoted["previous_version"] is None and promoted["age"].total_seconds() < 60
    await asyncio.sleep(SEEN)
    after = order(n("ORD-PROMOTED"), [(sku, 1)])
    await pipeline.publish(after)
    await pipeline.out.final_state(after.order_id, "released")
    assert [wo["node_id"] for wo in pipeline.out.released(after.order_id)] == [far]
    assert (await _latest_plan(pipeline, after.order_id)).policy_version == shadow_version
    assert not await pipeline.db.fetchval(
        "SELECT count(*) FROM decide_shadow_plans WHERE order_id = $1", after.order_id
    ), "no shadow any more"

    # Rollback: back to the policy file, recorded.
    out = await _cli(pipeline, "policy", "rollback", "--by", "cy", "--note", "costs too much")
    assert "the policy file is active again" in out and f"replacing {shadow_version}" in out
    rolled = await _last_change(pipeline)
    assert (rolled["action"], rolled["version"], rolled["previous_version"], rolled["who"]) == (
        "rollback",
        None,
        shadow_version,
        "cy",
    )
    await asyncio.sleep(SEEN)
    back = order(n("ORD-ROLLED-BACK"), [(sku, 1)])
    await pipeline.publish(back)
    await pipeline.out.final_state(back.order_id, "released")
    assert [wo["node_id"] for wo in pipeline.out.released(back.order_id)] == [near]
    assert (await _latest_plan(pipeline, back.order_id)).policy_version == file_version

    history = await _cli(pipeline, "policy", "history")
    for who, action in (("ana", "deploy_shadow"), ("ben", "promote"), ("cy", "rollback")):
        assert any(who in line and action in line for line in history.splitlines()), history
    assert "costs too much" in history
    error = await _cli(pipeline, "policy", "rollback", ok=False)
    assert "nothing to roll back to" in error


async def test_an_invalid_policy_file_is_refused_and_nothing_is_recorded(
    pipeline: Pipeline, clean_record: None
) -> None:
    before = await pipeline.db.fetchval("SELECT count(*) FROM decide_policy_changes")
    bad = _policy_file("bad-1", split_cost=-1)
    out = await _cli(pipeline, "policy", "deploy", str(bad), "--shadow", ok=False)
    assert f"policy {bad}: split_cost" in out
    out = await _cli(pipeline, "policy", "promote", ok=False)
    assert "nothing to promote" in out
    assert await pipeline.db.fetchval("SELECT count(*) FROM decide_policy_changes") == before
