"""The monitor's rules without Kafka: states only move forward, repeats change nothing,
the order's shipping state, exception and timer ids."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.contract.common import OrderState, SkuLine
from orchestrator.contract.execution import (
    NodeCancelReason,
    NodeRejectReason,
    ShipmentDelivered,
    ShipmentInTransit,
    ShortLine,
    WorkOrderAcknowledged,
    WorkOrderCancelledByNode,
    WorkOrderRejected,
    WorkOrderShortPicked,
)
from orchestrator.contract.status import ExceptionKind
from orchestrator.domain.monitoring import (
    MILESTONES,
    RANK,
    Deadlines,
    ShipmentState,
    advance,
    aggregate,
    compact_time,
    due_timers,
    exception_id,
    is_due,
    milestone_of,
    node_stopped,
    order_transitions,
    promise_at_risk,
    short_pick_detail,
    short_unfilled,
    timer_event_id,
)
from orchestrator.stages.monitor import MonitorTimers

S = ShipmentState
NOW = datetime(2030, 3, 1, 12, 0, tzinfo=UTC)


def _apply(state: ShipmentState, targets: list[ShipmentState]) -> tuple[ShipmentState, int]:
    changes = 0
    for target in targets:
        new = advance(state, target)
        if new is not None:
            state, changes = new, changes + 1
    return state, changes


# ------------------------------------------------------------------ states


@pytest.mark.parametrize("current", list(MILESTONES))
@pytest.mark.parametrize("target", list(MILESTONES))
def test_milestones_only_move_forward(current: ShipmentState, target: ShipmentState) -> None:
    expected = target if RANK[target] > RANK[current] else None
    assert advance(current, target) == expected


@pytest.mark.parametrize("state", list(ShipmentState))
def test_the_same_event_twice_changes_nothing_the_second_time(state: ShipmentState) -> None:
    assert advance(state, state) is None


@given(st.lists(st.sampled_from(MILESTONES), max_size=12))
def test_any_order_of_milestone_events_ends_at_the_furthest(targets: list[ShipmentState]) -> None:
    final, changes = _apply(S.RELEASED, targets)
    furthest = max([S.RELEASED, *targets], key=RANK.__getitem__)
    assert final is furthest
    # Each change is a step forward, so there are at most as many as distinct milestones passed.
    assert changes <= len({t for t in targets if t is not S.RELEASED})


@given(st.lists(st.sampled_from(MILESTONES), max_size=12))
def test_replaying_every_event_again_changes_nothing(targets: list[ShipmentState]) -> None:
    final, _ = _apply(S.RELEASED, targets)
    again, changes = _apply(final, targets)
    assert (again, changes) == (final, 0)


def test_cancel_requested_only_for_work_still_at_the_node() -> None:
    for state in (S.RELEASED, S.ACKNOWLEDGED, S.PICKED, S.PACKED):
        assert advance(state, S.CANCEL_REQUESTED) is S.CANCEL_REQUESTED
    for state in (S.SHIPPED, S.IN_TRANSIT, S.DELIVERED, S.CANCELLED, S.REJECTED, S.LOST):
        assert advance(state, S.CANCEL_REQUESTED) is None


def test_work_asked_to_cancel_ignores_node_progress_but_not_shipping() -> None:
    for target in (S.ACKNOWLEDGED, S.PICKED, S.PACKED):
        assert advance(S.CANCEL_REQUESTED, target) is None
    # Too late to cancel: the node shipped it anyway, and it goes on being tracked.
    assert advance(S.CANCEL_REQUESTED, S.SHIPPED) is S.SHIPPED
    assert advance(S.CANCEL_REQUESTED, S.DELIVERED) is S.DELIVERED


def test_lost_then_delivered_and_nothing_after_delivery() -> None:
    assert advance(S.IN_TRANSIT, S.LOST) is S.LOST
    assert advance(S.LOST, S.LOST) is None
    assert advance(S.LOST, S.IN_TRANSIT) is None
    assert advance(S.LOST, S.DELIVERED) is S.DELIVERED
    assert advance(S.DELIVERED, S.LOST) is None


def _rejected() -> WorkOrderRejected:
    return WorkOrderRejected(
        work_order_id="WO-1", order_id="O-1", node_id="N-1", occurred_at=NOW, reason=NodeRejectReason.NO_STOCK
    )


def _node_cancelled() -> WorkOrderCancelledByNode:
    return WorkOrderCancelledByNode(
        work_order_id="WO-1", order_id="O-1", node_id="N-1", occurred_at=NOW, reason=NodeCancelReason.DAMAGED
    )


def test_a_node_refusing_open_work_is_an_exception() -> None:
    for state in (S.RELEASED, S.ACKNOWLEDGED, S.PICKED, S.PACKED):
        stop = node_stopped(state, _rejected())
        assert stop is not None and (stop.state, stop.kind) == (S.REJECTED, ExceptionKind.NODE_REJECTED)
        stop = node_stopped(state, _node_cancelled())
        assert stop is not None and (stop.state, stop.kind) == (
            S.NODE_CANCELLED,
            ExceptionKind.NODE_CANCELLED,
        )


def test_a_node_confirming_our_cancel_request_is_no_exception() -> None:
    for event in (_rejected(), _node_cancelled()):
        stop = node_stopped(S.CANCEL_REQUESTED, event)
        assert stop is not None and (stop.state, stop.kind) == (S.CANCELLED, None)


def test_a_cancel_as_requested_read_before_our_request_is_still_no_exception() -> None:
    """The request (wms.work-orders.v1) and the answer (wms.events.v1) are on different topics; after a
    restart with a backlog monitor can read the answer first. Repairing it would ship the order twice."""
    answer = _node_cancelled().model_copy(update={"reason": NodeCancelReason.REQUESTED})
    for state in (S.RELEASED, S.ACKNOWLEDGED, S.PICKED, S.PACKED):
        stop = node_stopped(state, answer)
        assert stop is not None and (stop.state, stop.kind) == (S.CANCELLED, None)
    assert node_stopped(S.SHIPPED, answer) is None


def test_a_refusal_after_shipping_or_a_repeated_refusal_changes_nothing() -> None:
    for state in (S.SHIPPED, S.IN_TRANSIT, S.DELIVERED, S.REJECTED, S.NODE_CANCELLED, S.CANCELLED, S.LOST):
        assert node_stopped(state, _rejected()) is None
        assert node_stopped(state, _node_cancelled()) is None


def test_which_events_are_milestones() -> None:
    ack = WorkOrderAcknowledged(work_order_id="WO-1", order_id="O-1", node_id="N-1", occurred_at=NOW)
    short = WorkOrderShortPicked(
        work_order_id="WO-1",
        order_id="O-1",
        node_id="N-1",
        occurred_at=NOW,
        lines=(ShortLine(line_id="L1", sku="SKU-A", quantity_picked=1, quantity_short=1),),
    )
    carrier = {
        "tracking_number": "T1",
        "carrier": "c",
        "order_id": "O-1",
        "shipment_id": "S1",
        "occurred_at": NOW,
    }
    assert milestone_of(ack) is S.ACKNOWLEDGED
    assert milestone_of(short) is S.PICKED  # picking is over, with less
    assert milestone_of(ShipmentInTransit(location="Leeds", **carrier)) is S.IN_TRANSIT
    assert milestone_of(ShipmentDelivered(**carrier)) is S.DELIVERED
    assert milestone_of(_rejected()) is None  # a refusal is not a step forward; node_stopped decides


# ------------------------------------------------------------ order state


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ([], None),
        ([S.RELEASED], None),
        ([S.RELEASED, S.PACKED], None),
        ([S.SHIPPED, S.RELEASED], OrderState.PARTIALLY_SHIPPED),
        ([S.DELIVERED, S.ACKNOWLEDGED], OrderState.PARTIALLY_SHIPPED),
        ([S.SHIPPED, S.IN_TRANSIT], OrderState.SHIPPED),
        ([S.DELIVERED, S.SHIPPED], OrderState.SHIPPED),
        ([S.DELIVERED, S.DELIVERED], OrderState.DELIVERED),
        # Work that was cancelled, refused or lost no longer counts for the order.
        ([S.SHIPPED, S.CANCEL_REQUESTED], OrderState.SHIPPED),
        ([S.DELIVERED, S.CANCELLED, S.REJECTED], OrderState.DELIVERED),
        ([S.CANCELLED, S.NODE_CANCELLED], None),
        ([S.LOST, S.SHIPPED], OrderState.SHIPPED),
    ],
)
def test_the_orders_shipping_state(states: list[ShipmentState], expected: OrderState | None) -> None:
    assert aggregate(states) == expected


def test_an_order_state_is_reported_only_when_it_changes() -> None:
    assert order_transitions([S.PACKED, S.RELEASED], [S.SHIPPED, S.RELEASED]) == (
        OrderState.PARTIALLY_SHIPPED,
    )
    assert order_transitions([S.SHIPPED, S.RELEASED], [S.SHIPPED, S.SHIPPED]) == (OrderState.SHIPPED,)
    assert order_transitions([S.SHIPPED, S.SHIPPED], [S.DELIVERED, S.SHIPPED]) == ()
    assert order_transitions([S.DELIVERED, S.SHIPPED], [S.DELIVERED, S.DELIVERED]) == (OrderState.DELIVERED,)
    # A repeat: the same states before and after.
    assert order_transitions([S.SHIPPED, S.RELEASED], [S.SHIPPED, S.RELEASED]) == ()
    # Cancelling the only work that had not shipped completes the order's shipping.
    assert order_transitions([S.SHIPPED, S.RELEASED], [S.SHIPPED, S.CANCEL_REQUESTED]) == (
        OrderState.SHIPPED,
    )
    # A new work order (a repair) after everything shipped makes the order partial again.
    assert order_transitions([S.SHIPPED], [S.SHIPPED, S.RELEASED]) == (OrderState.PARTIALLY_SHIPPED,)
    # The carrier's delivery scan overtook the node's `shipped`: the order shipped, then was delivered.
    assert order_transitions([S.PICKED], [S.DELIVERED]) == (OrderState.SHIPPED, OrderState.DELIVERED)
    assert order_transitions([S.DELIVERED, S.PACKED], [S.DELIVERED, S.DELIVERED]) == (
        OrderState.SHIPPED,
        OrderState.DELIVERED,
    )


@given(st.lists(st.sampled_from(MILESTONES), min_size=1, max_size=10), st.integers(min_value=1, max_value=3))
def test_order_state_reports_follow_the_shipments_forward(targets: list[ShipmentState], n: int) -> None:
    """Whatever events arrive for n work orders, delivered is reported at most once, and last."""
    states = [S.RELEASED] * n
    reported: list[OrderState] = []
    for i, target in enumerate(targets):
        before = list(states)
        new = advance(states[i % n], target)
        if new is not None:
            states[i % n] = new
        reported.extend(order_transitions(before, states))
    assert reported.count(OrderState.DELIVERED) <= 1
    if OrderState.DELIVERED in reported:
        assert reported[-1] is OrderState.DELIVERED
        # Shipped is always told before delivered, whatever order the node's and carrier's events came in.
        assert reported[-2] is OrderState.SHIPPED
    assert all(a is not b for a, b in pairwise(reported))


# ---------------------------------------------------------------- exceptions


def test_exception_ids_are_deterministic() -> None:
    assert exception_id("WO-1", ExceptionKind.SHORT_PICK) == "WO-1:short_pick"
    assert exception_id("WO-1", ExceptionKind.SHORT_PICK) == exception_id("WO-1", ExceptionKind.SHORT_PICK)
    assert (
        exception_id("WO-1", ExceptionKind.PROMISE_AT_RISK, "2030-03-05") == "WO-1:promise_at_risk:2030-03-05"
    )
    # Repeatable kinds differ by their suffix; whitespace (a carrier's code) never reaches the id.
    assert exception_id("WO-1", ExceptionKind.CARRIER_EXCEPTION, "bad address:1") != exception_id(
        "WO-1", ExceptionKind.CARRIER_EXCEPTION, "bad address:2"
    )
    assert " " not in exception_id("WO-1", ExceptionKind.CARRIER_EXCEPTION, "bad address")


def test_a_long_exception_id_stays_within_the_contract_and_unique() -> None:
    wo = "WO-" + "x" * 124
    a = exception_id(wo, ExceptionKind.CARRIER_EXCEPTION, "code:1")
    b = exception_id(wo, ExceptionKind.CARRIER_EXCEPTION, "code:2")
    assert len(a) <= 128 and len(b) <= 128
    assert a != b
    assert a == exception_id(wo, ExceptionKind.CARRIER_EXCEPTION, "code:1")


def test_short_pick_names_what_is_missing() -> None:
    short = (
        ShortLine(line_id="L1", sku="SKU-A", quantity_picked=1, quantity_short=1),
        ShortLine(line_id="L2", sku="SKU-B", quantity_picked=0, quantity_short=3),
    )
    assert short_unfilled(short) == (
        SkuLine(line_id="L1", sku="SKU-A", quantity=1),
        SkuLine(line_id="L2", sku="SKU-B", quantity=3),
    )
    assert short_pick_detail("N-1", short) == "node N-1 picked 1 of 2 SKU-A; 0 of 3 SKU-B"


def test_only_a_delay_past_the_promise_is_a_risk() -> None:
    promised = date(2030, 3, 5)
    assert not promise_at_risk(promised, date(2030, 3, 4))
    assert not promise_at_risk(promised, promised)
    assert promise_at_risk(promised, date(2030, 3, 6))


# -------------------------------------------------------------------- timers


def _deadlines(state: ShipmentState, fired: frozenset[str] = frozenset()) -> Deadlines:
    return Deadlines(
        state=state,
        acknowledge=NOW - timedelta(minutes=1),
        ship_by=NOW + timedelta(hours=1),
        carrier_scan=None,
        fired=fired,
    )


def test_a_deadline_is_due_only_while_it_applies_and_once() -> None:
    assert due_timers(_deadlines(S.RELEASED), NOW) == [("acknowledge", NOW - timedelta(minutes=1))]
    assert due_timers(_deadlines(S.ACKNOWLEDGED), NOW) == []  # acknowledged in time after all
    assert due_timers(_deadlines(S.RELEASED, frozenset({"acknowledge"})), NOW) == []  # fired already
    assert due_timers(_deadlines(S.CANCEL_REQUESTED), NOW) == []  # we asked to cancel: no timer applies
    later = NOW + timedelta(hours=2)
    assert [t for t, _ in due_timers(_deadlines(S.PACKED), later)] == ["ship_by"]
    assert due_timers(_deadlines(S.SHIPPED), later) == []


def test_the_carrier_scan_deadline_applies_once_the_carrier_has_it() -> None:
    d = Deadlines(
        state=S.IN_TRANSIT,
        acknowledge=NOW - timedelta(days=2),
        ship_by=NOW - timedelta(days=1),
        carrier_scan=NOW - timedelta(seconds=1),
        fired=frozenset(),
    )
    assert [t for t, _ in due_timers(d, NOW)] == ["carrier_scan"]
    assert not is_due(d, "carrier_scan", NOW - timedelta(seconds=2))
    delivered = Deadlines(S.DELIVERED, d.acknowledge, d.ship_by, d.carrier_scan, frozenset())
    assert due_timers(delivered, NOW) == []


def test_timer_event_ids_are_the_same_for_the_same_deadline() -> None:
    due = NOW - timedelta(minutes=1)
    same_instant = due.astimezone(timezone(timedelta(hours=2)))
    assert timer_event_id("WO-1", "acknowledge", due) == timer_event_id("WO-1", "acknowledge", same_instant)
    assert timer_event_id("WO-1", "acknowledge", due).startswith("timer:WO-1:acknowledge:")
    # A moved deadline (a scan came) is a new timer, not a repeat of the old one.
    assert timer_event_id("WO-1", "carrier_scan", due) != timer_event_id("WO-1", "carrier_scan", NOW)
    assert compact_time(due) == "20300301T115900000000Z"


def test_timeouts_from_the_environment() -> None:
    assert MonitorTimers.from_env({}) == MonitorTimers()
    assert MonitorTimers().acknowledge_within == timedelta(minutes=30)
    assert MonitorTimers().carrier_scan_within == timedelta(hours=24)
    timers = MonitorTimers.from_env({"ORCHESTRATOR_ACK_TIMEOUT_S": "2", "ORCHESTRATOR_SCAN_TIMEOUT_S": "3.5"})
    assert timers.acknowledge_within == timedelta(seconds=2)
    assert timers.carrier_scan_within == timedelta(seconds=3.5)
    with pytest.raises(ValueError, match="ORCHESTRATOR_ACK_TIMEOUT_S"):
        MonitorTimers.from_env({"ORCHESTRATOR_ACK_TIMEOUT_S": "soon"})
    with pytest.raises(ValueError, match="positive"):
        MonitorTimers.from_env({"ORCHESTRATOR_SCAN_TIMEOUT_S": "0"})
