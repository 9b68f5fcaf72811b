"""The short version of `make faults`: every stage as two processes of one consumer group, the
simulated OMS, nodes and carriers, and faults on all of it, on a Kafka and a PostgreSQL of the run's
own (so it may restart them). The guarantees are then audited from the topics and the database."""

from __future__ import annotations

from pathlib import Path

from orchestrator.faults.commands import report_text
from orchestrator.faults.driver import FaultRunOptions, run_faults
from orchestrator.faults.plan import FaultBudget
from orchestrator.sim.live.driver import NetworkSize
from orchestrator.stages import ORDER_STAGES


async def test_kills_restarts_and_a_closed_node_lose_and_double_nothing(tmp_path: Path) -> None:
    options = FaultRunOptions(
        orders=400,
        rate=10.0,
        instances=2,
        budget=FaultBudget(
            kills=len(ORDER_STAGES),
            broker_restarts=1,
            database_restarts=1,
            close_node=True,
            kill_one_of_each=True,
        ),
        network=NetworkSize(dcs=3, stores=10, skus=60),
        drain_timeout_s=240,
    )
    lines: list[str] = []
    report = await run_faults(options, tmp_path, say=lines.append)
    text = report_text(report) + "\n" + "\n".join(lines[-20:])
    audit = report["audit"]

    assert audit["problems"] == [], text
    assert audit["orders"] == 400, text
    assert audit["lost_orders"] == 0 and audit["unsettled_orders"] == 0, text
    assert audit["duplicate_work_orders"] == 0 and audit["duplicate_transitions"] == 0, text
    assert audit["oversold_units"] == 0 and audit["ledger_mismatches"] == 0, text
    # Shipments consumed their reservations (the check is part of `problems`; here, that it had work).
    assert audit["lines_shipped"] > 0 and audit["shipped_still_reserved"] == 0, text
    # No line left the nodes twice (a repair of work a node shipped anyway would send it again),
    # other than by a node shipping work it was asked to cancel too late (README "Not yet": the
    # report counts those apart).
    assert audit["shipped_beyond_order"] == 0, text
    assert audit["final_states"].get("delivered", 0) > 300, text
    # Returns went through the same faults: each told once per step, at rest, restocked once.
    assert audit["returns"] > 20 and audit["restocks"] > 0, text
    assert audit["lost_returns"] == 0 and audit["unsettled_returns"] == 0, text
    assert audit["duplicate_return_transitions"] == 0, text
    assert audit["duplicate_return_work_orders"] == 0 and audit["duplicate_restocks"] == 0, text
    # Every fault went in and everything it hit came back.
    assert [f for f in report["faults"] if f["error"] or f["back_s"] is None] == [], text
    assert report["stages_killed"] == sorted(ORDER_STAGES), text
    # Scale-out: one instance of every stage went for good and the other took all its partitions.
    for_good = [f for f in report["faults"] if f["kind"] == "kill_stage" and not f["restart"]]
    assert len(for_good) == len(ORDER_STAGES), text
    kinds = {f["kind"] for f in report["faults"]}
    if report["servers_owned"]:
        assert {"restart_broker", "crash_database"} <= kinds, text
    assert {"close_node", "reopen_node"} <= kinds, text
