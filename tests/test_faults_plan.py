"""The fault schedule, the audit of the guarantees and the run's ports: no servers started."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.faults.audit import ReturnStatusSeen, RunFacts, StatusSeen, WorkOrderSeen, audit
from orchestrator.faults.commands import recovery_by_kind
from orchestrator.faults.driver import RunServers
from orchestrator.faults.plan import FaultBudget, FaultKind, fault_schedule
from orchestrator.infra.ports import port_free
from orchestrator.sim.live.fleet import StageFleet
from orchestrator.topics import STAGE_NAMES

STAGES = list(STAGE_NAMES)


def _kills(schedule: list) -> list:
    return [f for f in schedule if f.kind is FaultKind.KILL_STAGE]


def test_the_full_run_kills_every_stage_and_restarts_each_server() -> None:
    schedule = fault_schedule(
        duration_s=500, stages=STAGES, instances=2, budget=FaultBudget(), node_to_close="DC-1", seed=7
    )
    kills = _kills(schedule)
    assert len(kills) == 30
    assert {f.target.rsplit("-", 1)[0] for f in kills} == set(STAGES)
    kinds = [f.kind for f in schedule]
    assert kinds.count(FaultKind.RESTART_BROKER) == 1
    assert kinds.count(FaultKind.CRASH_BROKER) == 1
    assert kinds.count(FaultKind.CRASH_DATABASE) == 1
    closed = [f for f in schedule if f.kind is FaultKind.CLOSE_NODE]
    reopened = [f for f in schedule if f.kind is FaultKind.REOPEN_NODE]
    assert [f.target for f in closed] == ["DC-1"] and reopened[0].at_s > closed[0].at_s
    assert [f.at_s for f in schedule] == sorted(f.at_s for f in schedule)


@settings(max_examples=200, deadline=None)
@given(
    duration=st.floats(min_value=20, max_value=3000),
    kills=st.integers(min_value=0, max_value=60),
    instances=st.integers(min_value=1, max_value=3),
    seed=st.integers(min_value=0, max_value=10_000),
)
def test_kills_stay_inside_the_run_and_clear_of_server_faults(
    duration: float, kills: int, instances: int, seed: int
) -> None:
    schedule = fault_schedule(
        duration_s=duration,
        stages=STAGES,
        instances=instances,
        budget=FaultBudget(kills=kills),
        node_to_close=None,
        seed=seed,
    )
    servers = [
        f.at_s
        for f in schedule
        if f.kind in (FaultKind.RESTART_BROKER, FaultKind.CRASH_BROKER, FaultKind.CRASH_DATABASE)
    ]
    clear = min(15.0, 0.04 * duration)
    for kill in _kills(schedule):
        assert 0 < kill.at_s <= duration
        assert int(kill.target.rsplit("-", 1)[1]) < instances
        assert all(abs(kill.at_s - at) >= clear - 0.11 for at in servers), (kill, servers)
    if kills >= len(STAGES):
        assert {f.target.rsplit("-", 1)[0] for f in _kills(schedule)} == set(STAGES)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(min_value=0, max_value=10_000), kills=st.integers(min_value=0, max_value=40))
def test_scale_out_kills_one_of_each_for_good_and_never_hits_the_dead_again(seed: int, kills: int) -> None:
    schedule = fault_schedule(
        duration_s=120,
        stages=STAGES,
        instances=2,
        budget=FaultBudget(kills=kills, kill_one_of_each=True),
        node_to_close=None,
        seed=seed,
    )
    for_good = [f for f in _kills(schedule) if not f.restart]
    assert sorted(f.target.rsplit("-", 1)[0] for f in for_good) == sorted(STAGES)
    dead_at = {f.target: f.at_s for f in for_good}
    for kill in _kills(schedule):
        if kill.restart and kill.target in dead_at:
            assert kill.at_s < dead_at[kill.target], f"{kill.target} killed again after it was gone"


def test_killing_one_of_each_for_good_needs_two_of_each() -> None:
    with pytest.raises(ValueError, match="at least two"):
        fault_schedule(
            duration_s=60,
            stages=STAGES,
            instances=1,
            budget=FaultBudget(kill_one_of_each=True),
            node_to_close=None,
            seed=1,
        )


# --------------------------------------------------------------------------- audit


def _clean_facts() -> RunFacts:
    return RunFacts(
        order_prefix="LIVE-x-",
        created=["LIVE-x-1", "LIVE-x-2"],
        work_orders=[
            WorkOrderSeen("WO-1", "LIVE-x-1", "S-1", "DC-1", (("L1", "SKU-1", 2),)),
            WorkOrderSeen("WO-2", "LIVE-x-2", "S-2", "DC-1", (("L1", "SKU-1", 1),)),
        ],
        statuses=[
            StatusSeen("LIVE-x-1", 1, "released", None),
            StatusSeen("LIVE-x-1", 2, "delivered", "released"),
            StatusSeen("LIVE-x-2", 1, "back_ordered", None),
        ],
        ledger=[("DC-1", "SKU-1", 5, 0, 3, 3)],
        reservation_ids=frozenset({"S-1-L1", "S-2-L1"}),
        ordered_lines=[("LIVE-x-1", "L1", 2), ("LIVE-x-2", "L1", 1)],
        shipment_orders={"S-1": "LIVE-x-1", "S-2": "LIVE-x-2"},
        exception_cases=[("E-1", "resolved"), ("E-2", "in_review")],
        return_statuses=[
            ReturnStatusSeen("RMA-1", 1, "authorised", None),
            ReturnStatusSeen("RMA-1", 2, "awaiting_return", "authorised"),
            ReturnStatusSeen("RMA-1", 3, "completed", "awaiting_return"),
        ],
        return_requests=["RMA-1"],
        return_work_orders=["RO-RMA-1"],
        # Another run's restock of the same return work order id is not this run's to count.
        restocks=[("RO-RMA-1", "DC-1", "SKU-1", 1), ("RO-RMA-OTHER", "DC-1", "SKU-1", 1)],
    )


def test_a_clean_run_has_no_problems() -> None:
    result = audit(_clean_facts())
    assert result.problems == []
    assert result.orders == 2 and result.work_orders == 2 and result.status_transitions == 3
    assert result.final_states == {"delivered": 1, "back_ordered": 1}
    assert (result.returns, result.restocks, result.return_final_states) == (1, 1, {"completed": 1})


def test_the_audit_finds_each_broken_guarantee() -> None:
    facts = _clean_facts()
    facts.created.append("LIVE-x-3")  # never told to the OMS: lost
    facts.created.append("LIVE-x-4")
    facts.statuses.append(StatusSeen("LIVE-x-4", 1, "released", None))  # still moving
    facts.work_orders.append(facts.work_orders[0])  # the same work order twice
    facts.work_orders.append(WorkOrderSeen("WO-9", "LIVE-x-1", "S-1", "DC-1", (("L1", "SKU-1", 2),)))
    facts.work_orders.append(WorkOrderSeen("WO-7", "LIVE-x-2", "S-7", "DC-1", (("L1", "SKU-1", 1),)))
    facts.statuses.append(StatusSeen("LIVE-x-1", 2, "delivered", "released"))  # the same transition twice
    facts.ledger.append(("DC-2", "SKU-1", 1, 0, 3, 2))  # reserved 3 but reservations say 2; 2 oversold
    # DC-1 counted 3 units fewer after WO-2 came up short by 3; its reservation still holds them:
    # reserved 3 > on hand 2, but by units that are missing, not promised twice.
    facts.ledger[0] = ("DC-1", "SKU-1", 2, 0, 3, 3)
    facts.short_picks.append(("WO-2", "L1", "SKU-1", 3))
    facts.active_reservation_ids = frozenset({"S-2-L1"})
    facts.exception_cases.append(("E-3", "open"))
    # S-2 left in full yet its reservation is still held; S-1 left short and still holds the rest.
    facts.shipped_lines += [("S-2", "L1", 1), ("S-1", "L1", 1)]
    facts.active_reservation_ids |= {"S-1-L1"}
    # A return told the same transition twice, one still under way, its work order and restock doubled.
    facts.return_statuses += [
        ReturnStatusSeen("RMA-1", 3, "completed", "awaiting_return"),
        ReturnStatusSeen("RMA-2", 1, "authorised", None),
        ReturnStatusSeen("RMA-2", 2, "received", "authorised"),
    ]
    facts.return_work_orders += ["RO-RMA-1", "RO-RMA-2"]
    facts.return_requests += ["RMA-2", "RMA-3"]  # RMA-3 never told: lost
    facts.restocks.append(("RO-RMA-1", "DC-1", "SKU-1", 1))
    result = audit(facts)
    assert result.lost_orders == ["LIVE-x-3"]
    assert result.unsettled_orders == ["LIVE-x-4"]
    assert result.duplicate_work_orders == ["WO-1 x2", "shipment S-1: WO-1, WO-9"]
    assert result.duplicate_transitions == ["LIVE-x-1#2"]
    assert result.ledger_mismatches == ["DC-2/SKU-1 reserved 3 vs reservations 2"]
    assert result.oversold_units == 2
    assert result.missing_units_still_reserved == 3
    assert result.unreserved_work_order_lines == ["WO-7/L1"]
    assert result.open_exceptions == ["E-3"]
    assert result.shipped_still_reserved == ["S-1-L1", "S-2-L1"]
    assert result.duplicate_return_transitions == ["RMA-1#3"]
    assert result.unsettled_returns == ["RMA-2"]
    assert result.lost_returns == ["RMA-3"]
    assert result.duplicate_return_work_orders == ["RO-RMA-1 x2"]
    assert result.duplicate_restocks == ["RO-RMA-1 SKU-1 at DC-1 x2"]
    assert len(result.problems) == 14


def test_a_line_shipped_twice_is_found_unless_it_was_lost_exchanged_or_raised() -> None:
    facts = _clean_facts()
    facts.ordered_lines += [("LIVE-x-3", "L1", 1), ("LIVE-x-3", "L2", 1), ("LIVE-x-3", "L2", 2)]
    facts.shipment_orders |= {"S-3": "LIVE-x-3", "S-4": "LIVE-x-3", "S-5": "LIVE-x-3", "S-6": "LIVE-x-3"}
    # L1: the closed node shipped anyway, and the back-ordered line shipped again when stock came.
    facts.shipped_lines += [("S-3", "L1", 1), ("S-4", "L1", 1)]
    result = audit(facts)
    assert result.shipped_beyond_order == ["LIVE-x-3/L1 shipped 2 of 1"]
    assert result.problems == [
        "1 order line(s) shipped in more units than ordered: LIVE-x-3/L1 shipped 2 of 1"
    ]
    # Sent again because the first parcel was lost; L2 amended from 1 to 2 and shipped in two parts;
    # one unit of it exchanged, its replacement a line of its own: none of it is doubled.
    facts.resent_shipments.add("S-3")
    facts.shipped_lines += [("S-5", "L2", 1), ("S-6", "L2", 1), ("S-6", "RMA-1.L2", 1)]
    facts.exchanged_lines.append(("LIVE-x-3", "RMA-1.L2", 1))
    assert audit(facts).shipped_beyond_order == []
    facts.shipped_lines += [("S-4", "L1", 1), ("S-6", "RMA-1.L2", 1)]
    assert audit(facts).shipped_beyond_order == [
        "LIVE-x-3/L1 shipped 3 of 1 (+1 sent again or exchanged)",
        "LIVE-x-3/RMA-1.L2 shipped 2 of 0 (+1 sent again or exchanged)",
    ]
    # S-4's node had been asked to cancel it and shipped it anyway: the known race, reported apart.
    facts.work_orders.append(WorkOrderSeen("WO-S-4", "LIVE-x-3", "S-4", "N1", (("L1", "SKU-1", 1),)))
    facts.cancel_requested.add("WO-S-4")
    result = audit(facts)
    assert result.shipped_beyond_order == ["LIVE-x-3/RMA-1.L2 shipped 2 of 0 (+1 sent again or exchanged)"]
    assert result.shipped_beyond_order_after_cancel == [
        "LIVE-x-3/L1 shipped 3 of 1 (+1 sent again or exchanged)"
    ]


def test_recovery_is_summarised_per_kind_of_fault() -> None:
    faults = [
        {"kind": "kill_stage", "restart": True, "back_s": 3.0, "flow_s": 1.0},
        {"kind": "kill_stage", "restart": True, "back_s": 5.0, "flow_s": None},
        {"kind": "kill_stage", "restart": True, "back_s": 13.0, "flow_s": 2.0},
        {"kind": "crash_database", "restart": True, "back_s": 4.0, "flow_s": 6.5},
    ]
    summary = recovery_by_kind(faults)
    assert summary["stage process killed, restarted"] == {
        "count": 3,
        "back_median": 5.0,
        "back_max": 13.0,
        "flow_median": 1.5,
        "flow_max": 2.0,
    }
    assert summary["PostgreSQL crashed, restarted"]["flow_median"] == 6.5


def test_every_stage_instance_and_server_of_a_fault_run_listens_on_its_own_port(tmp_path: Path) -> None:
    servers = RunServers(tmp_path)
    fleet = StageFleet(2, {}, tmp_path, avoid=servers.ports)
    ports = list(fleet.ports.values())
    assert len(set(ports)) == len(fleet.names) == 2 * len(STAGES)
    assert not servers.ports & set(ports)


def test_a_restarted_instance_whose_port_was_taken_meanwhile_gets_another(tmp_path: Path) -> None:
    fleet = StageFleet(1, {}, tmp_path)
    name = fleet.names[0]
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", fleet.ports[name]))
        squatter.listen()
        taken = fleet.ports[name]
        port = fleet.claim_port(name)
        assert port != taken
        assert fleet.url(name, "/readyz") == f"http://127.0.0.1:{port}/readyz"
    assert len(set(fleet.ports.values())) == len(fleet.names)


def test_stage_ports_asked_from_a_first_one_are_in_a_row_passing_over_taken_ones(tmp_path: Path) -> None:
    wanted = len(STAGES) + 2
    first = next(
        p for p in range(21000, 30000, 100) if all(port_free(q) for q in range(p, p + wanted))
    )  # a run of free ports: the test makes the only taken ones
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", first + 2))
        squatter.listen()
        fleet = StageFleet(1, {}, tmp_path, first_port=first, avoid=frozenset({first + 4}))
    ports = [fleet.ports[name] for name in fleet.names]
    expected = [p for p in range(first, first + len(ports) + 2) if p not in (first + 2, first + 4)]
    assert ports == expected
    # The summary names them as runs, so a person knows where to point a browser.
    runs = f"{first}-{first + 1},{first + 3},{first + 5}-{first + len(ports) + 1}"
    assert fleet.metrics_at == f"http://127.0.0.1:{{{runs}}}/metrics"
