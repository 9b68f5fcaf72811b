"""The simulators' pure cores: what nodes, carriers and the OMS send, and what the live view counts."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, date, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.contract.common import SkuLine
from orchestrator.contract.examples import example
from orchestrator.contract.execution import (
    WorkOrderCancelledByNode,
    WorkOrderPicked,
    WorkOrderShipped,
    WorkOrderShortPicked,
)
from orchestrator.contract.orders import OrderAmended, OrderCancelled, OrderHoldReleased
from orchestrator.contract.returns import (
    ReturnAuthorised,
    ReturnInspected,
    ReturnMethod,
    ReturnOrderReleased,
    ReturnReceived,
    ReturnResolution,
)
from orchestrator.contract.work import WorkOrderLine, WorkOrderReleased
from orchestrator.sim import build_network
from orchestrator.sim.live.behaviour import (
    IN_STORE_CARRIER,
    CarrierRates,
    NodeRates,
    ReturnRates,
    return_request,
    return_steps,
    shipment_steps,
    work_order_steps,
)
from orchestrator.sim.live.observer import case_ending
from orchestrator.sim.live.oms import OmsTraffic, TrafficShape, in_flash_sale
from orchestrator.sim.live.tally import LiveTally, decision_kind
from orchestrator.sim.orders import order_total

NETWORK = build_network(seed=3, stores=12, skus=60)


def _work_order(quantities: list[int]) -> WorkOrderReleased:
    base = example("workorder.released.v1")
    assert isinstance(base, WorkOrderReleased)
    lines = tuple(
        WorkOrderLine(line_id=str(i + 1), sku=f"SKU-{i:05d}", quantity=q) for i, q in enumerate(quantities)
    )
    return base.model_copy(update={"lines": lines})


@settings(max_examples=200, deadline=None)
@given(
    quantities=st.lists(st.integers(1, 5), min_size=1, max_size=4),
    seed=st.integers(0, 10_000),
    short=st.floats(0, 1),
    reject=st.floats(0, 0.3),
)
def test_a_node_never_ships_more_than_it_was_asked_and_accounts_for_every_unit(
    quantities: list[int], seed: int, short: float, reject: float
) -> None:
    wo = _work_order(quantities)
    steps = work_order_steps(wo, random.Random(seed), NodeRates(reject=reject, short_pick=short))
    events = [s.event for s in steps]
    assert all(s.after_s > 0 for s in steps)
    assert all(e.order_id == wo.order_id and e.work_order_id == wo.work_order_id for e in events)  # type: ignore[attr-defined]
    asked = {line.line_id: line.quantity for line in wo.lines}
    shipped = next((e for e in events if isinstance(e, WorkOrderShipped)), None)
    if shipped is None:
        # Refused or cancelled: the last word says so, and nothing was shipped.
        assert events[-1].event_type in ("wms.rejected.v1", "wms.cancelled.v1")
        return
    assert events[-1] is shipped
    sent = {line.line_id: line.quantity for line in shipped.lines}
    shorts = {
        s.line_id: s.quantity_short for e in events if isinstance(e, WorkOrderShortPicked) for s in e.lines
    }
    for line_id, quantity in asked.items():
        assert sent.get(line_id, 0) + shorts.get(line_id, 0) == quantity
    picked = [e for e in events if isinstance(e, WorkOrderPicked)]
    assert bool(picked) != bool(shorts)  # a full pick or a short pick, never both


def test_a_node_that_finds_nothing_cancels_instead_of_shipping_nothing() -> None:
    wo = _work_order([1])
    steps = work_order_steps(wo, random.Random(1), NodeRates(reject=0, node_cancel=0, short_pick=1))
    last = steps[-1].event
    assert isinstance(last, WorkOrderCancelledByNode) and last.reason == "no_stock"


def test_with_no_failures_every_work_order_is_acknowledged_picked_packed_shipped() -> None:
    rates = NodeRates(reject=0, short_pick=0, node_cancel=0)
    for seed in range(50):
        types = [
            s.event.event_type for s in work_order_steps(_work_order([2, 1]), random.Random(seed), rates)
        ]
        assert types == ["wms.acknowledged.v1", "wms.picked.v1", "wms.packed.v1", "wms.shipped.v1"]


def _shipped(carrier: str = "dhl") -> WorkOrderShipped:
    base = example("wms.shipped.v1")
    assert isinstance(base, WorkOrderShipped)
    return base.model_copy(update={"carrier": carrier})


def test_carriers_lose_delay_and_deliver_at_their_rates() -> None:
    rng = random.Random(5)
    today = date(2026, 11, 25)
    endings = Counter(
        shipment_steps(_shipped(), rng, CarrierRates(lost=0.1, delay=0.2, exception=0.05), today)[
            -1
        ].event.event_type
        for _ in range(2000)
    )
    assert endings.keys() == {"carrier.delivered.v1", "carrier.lost.v1"}
    assert 150 < endings["carrier.lost.v1"] < 250  # 10 % of 2,000
    delayed = [
        s.event
        for _ in range(500)
        for s in shipment_steps(_shipped(), rng, CarrierRates(lost=0, delay=1), today)
        if s.event.event_type == "carrier.delayed.v1"
    ]
    assert len(delayed) == 500 and all(e.new_estimated_delivery > today for e in delayed)  # type: ignore[attr-defined]


def test_a_collection_in_store_is_simply_collected() -> None:
    steps = shipment_steps(
        _shipped(IN_STORE_CARRIER), random.Random(1), CarrierRates(lost=1), date(2026, 1, 5)
    )
    assert [s.event.event_type for s in steps] == ["carrier.delivered.v1"]


def test_the_oms_stream_is_reproducible_and_its_amendments_keep_totals_right() -> None:
    def run() -> list[tuple[str, list[str]]]:
        traffic = OmsTraffic(NETWORK, seed=9, run_id="t", shape=TrafficShape(amend=0.3, cancel=0.1, hold=0.1))
        placed = datetime(2026, 11, 25, 12, tzinfo=UTC)
        out = []
        for n in range(1, 300):
            order, follow = traffic.order(n, placed, 1.0)
            for f in follow:
                if isinstance(f.event, OrderAmended) and f.event.line_quantities:
                    change = f.event.line_quantities[0]
                    after = [
                        line.model_copy(update={"quantity": change.quantity})
                        if line.line_id == change.line_id
                        else line
                        for line in order.lines
                        if line.line_id != change.line_id or change.quantity
                    ]
                    assert f.event.order_total == order_total(after)
                if isinstance(f.event, OrderHoldReleased):
                    assert f.event.hold in order.holds
            out.append((order.order_id, [f.event.event_type for f in follow]))
        return out

    first = run()
    assert first == run()
    kinds = Counter(t for _, follow in first for t in follow)
    assert kinds[OrderAmended.event_type] > 30
    assert kinds[OrderCancelled.event_type] > 10
    assert kinds[OrderHoldReleased.event_type] > 10


def test_flash_sales_come_periodically_and_put_a_hot_item_in_every_order() -> None:
    shape = TrafficShape(flash_sale_every_s=30, flash_sale_seconds=5, flash_sale_factor=4)
    assert not in_flash_sale(shape, 2)  # a run starts with ordinary traffic
    assert in_flash_sale(shape, 31) and in_flash_sale(shape, 62) and not in_flash_sale(shape, 40)
    traffic = OmsTraffic(NETWORK, seed=2, run_id="t", shape=shape)
    hot = {NETWORK.skus[i].sku for i in traffic.hot_skus}
    placed = datetime(2026, 11, 25, 12, tzinfo=UTC)
    for n in range(50):
        order, _ = traffic.order(n + 1, placed, 31.0)
        assert hot & {line.sku for line in order.lines}
    gaps_sale = sum(traffic.gap_s(31.0) for _ in range(2000))
    gaps_normal = sum(traffic.gap_s(10.0) for _ in range(2000))
    assert 3 < gaps_normal / gaps_sale < 5.5


def _plan(outcome: str, delivery: str, nodes: list[str], version: int = 1) -> dict[str, object]:
    return {
        "order_id": "LIVE-x-000001",
        "outcome": outcome,
        "plan_version": version,
        "order": {"delivery": {"kind": delivery}},
        "shipments": [{"node_id": n} for n in nodes],
    }


def test_decisions_are_told_apart_by_their_headline() -> None:
    stores = frozenset({"STORE-1"})
    assert decision_kind(_plan("ship", "standard", ["DC-1"]), stores) == "single_node"
    assert decision_kind(_plan("ship", "standard", ["DC-1", "DC-2"]), stores) == "split"
    assert decision_kind(_plan("ship", "express", ["STORE-1"]), stores) == "ship_from_store"
    assert decision_kind(_plan("ship", "bopis", ["STORE-1"]), stores) == "bopis"
    assert decision_kind(_plan("partial", "standard", ["DC-1"]), stores) == "back_order"
    assert decision_kind(_plan("hold_for_stock", "standard", []), stores) == "back_order"
    assert decision_kind(_plan("unfulfillable", "standard", []), stores) == "unfulfillable"


def test_the_tally_counts_only_its_run_and_each_order_first_plan_once() -> None:
    tally = LiveTally(order_prefix="LIVE-x-")
    tally.add("oms.orders.v1", "order.created.v1", 1_000, {"order_id": "LIVE-x-000001"})
    tally.add("oms.orders.v1", "order.created.v1", 1_000, {"order_id": "LIVE-y-000001"})
    tally.add("orchestrator.plans.v1", "plan.decided.v1", 1_100, _plan("ship", "standard", ["DC-1"]))
    tally.add(
        "orchestrator.plans.v1", "plan.decided.v1", 1_150, _plan("ship", "standard", ["DC-1", "DC-2"], 2)
    )
    tally.add("wms.work-orders.v1", "workorder.released.v1", 1_300, {"order_id": "LIVE-x-000001"})
    tally.add("wms.work-orders.v1", "workorder.released.v1", 1_900, {"order_id": "LIVE-x-000001"})
    tally.add(
        "oms.status.v1", "order.status_changed.v1", 1_900, {"order_id": "LIVE-x-000001", "state": "released"}
    )
    tally.add("wms.events.v1.dlq", "", 1_950, {})
    s = tally.summary()
    assert s["orders"] == {"created": 1}
    assert s["decisions"]["single_node"] == 1 and s["decisions"]["split"] == 0
    assert s["plan_outcomes"] == {"ship": 2}
    assert s["work_orders"] == {"released": 2}
    assert s["latency_ms"] == {"orders": 1, "p50": 300.0, "p99": 300.0}
    assert s["dead_letters"] == {"wms.events.v1.dlq": 1}
    assert tally.unsettled() == ["LIVE-x-000001"]  # released is not a resting state
    assert tally.rate("received", now_ms=2_000) == 0.2


def test_an_exception_case_ends_in_the_action_that_resolved_it() -> None:
    tried = [{"action": "reroute", "succeeded": False}, {"action": "backorder", "succeeded": True}]
    assert case_ending("resolved", tried, None) == "backorder"
    assert case_ending("in_review", [{"action": "hold_for_review", "succeeded": True}], None) == "in review"
    assert case_ending("open", [], "reroute") == "open (reroute)"


def test_the_live_frame_and_the_summary_render_every_count() -> None:
    from rich.console import Console

    from orchestrator.sim.live.view import live_table, progress_line, summary_text

    tally = LiveTally(order_prefix="LIVE-x-")
    tally.add("oms.orders.v1", "order.created.v1", 1_000, {"order_id": "LIVE-x-000001"})
    tally.add(
        "orchestrator.exceptions.v1",
        "exception.raised.v1",
        1_200,
        {"order_id": "LIVE-x-000001", "kind": "short_pick"},
    )
    snapshot = {
        "elapsed_s": 12.0,
        "received_per_s": 4.2,
        "released_per_s": 3.8,
        "flash_sale": True,
        "lag": {"reserve": 7},
        "summary": tally.summary(),
        "resolutions": {"short_pick": {"reroute": 1}},
    }
    console = Console(record=True, width=140, force_terminal=True)
    console.print(live_table(snapshot))
    frame = console.export_text()
    assert "FLASH SALE" in frame and "received 4.2/s" in frame and "short pick 1" in frame
    assert "reserve" in frame and "7" in frame
    assert "lag 7" in progress_line(snapshot)
    report = {
        "run_id": "x",
        "elapsed_s": 12.0,
        "summary": tally.summary(),
        "resolutions": snapshot["resolutions"],
    }
    text = summary_text(report)
    assert "1 orders placed" in text and "short_pick" in text and "reroute 1" in text


def _delivered(lines: list[tuple[str, int]], carrier: str = "tcarrier") -> WorkOrderShipped:
    shipped = _shipped(carrier)
    sku_lines = tuple(SkuLine(line_id=line_id, sku=f"SKU-{line_id}", quantity=q) for line_id, q in lines)
    return shipped.model_copy(update={"lines": sku_lines})


def test_customers_return_one_unit_of_an_order_line_at_their_rate_and_never_a_replacement() -> None:
    rng = random.Random(11)
    rates = ReturnRates(returned=0.25, exchange=0.2, store_credit=0.1)
    parcel = _delivered([("1", 3), ("2", 1), ("RMA-X.1", 1)])
    asked = [r for r in (return_request(parcel, rng, rates) for _ in range(4000)) if r is not None]
    assert 900 < len(asked) < 1100  # a quarter of 4,000
    for r in asked:
        assert isinstance(r, ReturnAuthorised) and r.order_id == parcel.order_id
        [line] = r.lines
        assert line.line_id in ("1", "2") and line.quantity == 1 and line.sku == f"SKU-{line.line_id}"
        assert r.method is ReturnMethod.SHIP_BACK and r.store_id is None
    resolutions = Counter(r.resolution for r in asked)
    assert 0.15 < resolutions[ReturnResolution.EXCHANGE] / len(asked) < 0.25
    assert 0.06 < resolutions[ReturnResolution.STORE_CREDIT] / len(asked) < 0.14
    # Only the replacement's units in the parcel: nothing of the order to send back.
    assert return_request(_delivered([("RMA-X.1", 1)]), rng, ReturnRates(returned=1)) is None
    assert return_request(parcel, rng, ReturnRates(returned=0)) is None
    # A line comes back once, even when it arrived twice (a node that shipped work it was asked to drop).
    taken = {(parcel.order_id, "1"), (parcel.order_id, "2")}
    assert return_request(parcel, rng, ReturnRates(returned=1), taken) is None
    [again] = [return_request(parcel, rng, ReturnRates(returned=1), {(parcel.order_id, "1")})]
    assert again is not None and [x.line_id for x in again.lines] == ["2"]


def test_a_collected_order_goes_back_to_its_store() -> None:
    parcel = _delivered([("1", 1)], IN_STORE_CARRIER)
    request = return_request(parcel, random.Random(2), ReturnRates(returned=1))
    assert request is not None
    assert request.method is ReturnMethod.IN_STORE and request.store_id == parcel.node_id


def test_a_node_receives_then_inspects_every_returned_unit() -> None:
    base = example("returnorder.released.v1")
    assert isinstance(base, ReturnOrderReleased)
    rng = random.Random(4)
    fit = 0
    for _ in range(300):
        received, inspected = (s.event for s in return_steps(base, rng, ReturnRates(restockable=0.5), 0.6))
        assert isinstance(received, ReturnReceived) and isinstance(inspected, ReturnInspected)
        assert received.return_order_id == base.return_order_id == inspected.return_order_id
        assert [(x.line_id, x.sku, x.quantity) for x in received.lines] == [
            (x.line_id, x.sku, x.quantity) for x in base.lines
        ]
        for got, sent in zip(inspected.lines, base.lines, strict=True):
            assert got.restockable + got.not_restockable == sent.quantity
            fit += got.restockable
    units = 300 * sum(x.quantity for x in base.lines)
    assert 0.4 < fit / units < 0.6


def test_the_tally_follows_each_return_and_keeps_its_order_unsettled_until_it_rests() -> None:
    tally = LiveTally(order_prefix="LIVE-x-")
    order = "LIVE-x-000001"
    tally.add("oms.orders.v1", "order.created.v1", 1_000, {"order_id": order})
    tally.add("oms.status.v1", "order.status_changed.v1", 2_000, {"order_id": order, "state": "delivered"})
    assert tally.unsettled() == []
    status = "return.status_changed.v1"
    tally.add("oms.returns.v1", "return.authorised.v1", 2_400, {"order_id": order, "return_id": "RMA-1"})
    assert tally.unsettled() == [order], "asked for: under way before the orchestrator says a word"
    tally.add(
        "oms.status.v1", status, 2_500, {"order_id": order, "return_id": "RMA-1", "state": "authorised"}
    )
    tally.add("oms.status.v1", status, 2_600, {"order_id": order, "return_id": "RMA-1", "state": "received"})
    assert tally.unsettled() == [order], "its return is under way"
    assert tally.summary()["returns"] == {"authorised": 1, "states": {"received": 1}}
    assert tally.summary()["final_states"] == {"delivered": 1}, "a return's states are not the order's"
    tally.add("oms.status.v1", status, 2_900, {"order_id": order, "return_id": "RMA-1", "state": "completed"})
    assert tally.unsettled() == []
    from orchestrator.sim.live.view import summary_text

    report = {"run_id": "x", "elapsed_s": 3.0, "summary": tally.summary(), "resolutions": {}}
    assert "Returns: 1 authorised; now completed 1" in summary_text(report)
