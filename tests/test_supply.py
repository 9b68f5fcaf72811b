"""The waiting-line queue of one SKU: expected dates, what stock releases, pre-orders in a plan."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.contract.common import OrderLine
from orchestrator.contract.pipeline import PlanOutcome
from orchestrator.domain.supply import (
    Inbound,
    PreorderRelease,
    WaitingLine,
    expected_dates,
    order_to_plan_now,
    preorder_plan,
    queue,
    releasable,
    waiting_lines,
    waits_only_for_release,
    with_preorders,
)
from tests.harness import order

TODAY = date(2026, 11, 25)
T0 = datetime(2026, 11, 25, 9, tzinfo=UTC)


def waiting(order_id: str, quantity: int, minutes: int, release_on: date | None = None) -> WaitingLine:
    return WaitingLine(order_id, "1", "SKU", quantity, T0 + timedelta(minutes=minutes), release_on)


def test_each_line_gets_the_day_supply_ahead_of_it_covers_it() -> None:
    lines = [waiting("A", 3, 0), waiting("B", 4, 1), waiting("C", 5, 2)]
    inbound = [
        Inbound("DC", "SKU", "PO-2", 4, TODAY + timedelta(days=6)),
        Inbound("DC", "SKU", "PO-1", 2, TODAY + timedelta(days=3)),
    ]
    dates = expected_dates(lines, available_now=1, inbound=inbound, today=TODAY)
    assert dates[("A", "1")] == TODAY + timedelta(days=3)  # 1 on hand + 2 on day 3
    assert dates[("B", "1")] == TODAY + timedelta(days=6)  # needs 7: day 6 brings the total to 7
    assert dates[("C", "1")] is None  # 12 needed, 7 known: no date to promise yet


def test_a_preorder_is_never_dated_before_its_release() -> None:
    release = TODAY + timedelta(days=10)
    dates = expected_dates([waiting("A", 1, 0, release)], available_now=5, inbound=[], today=TODAY)
    assert dates[("A", "1")] == release


def test_stock_serves_the_queue_in_order_and_a_preorder_keeps_its_units() -> None:
    lines = [
        waiting("EARLY-PRE", 2, 0, TODAY + timedelta(days=5)),
        waiting("BACK-1", 2, 1),
        waiting("BACK-2", 5, 2),
        waiting("BACK-3", 1, 3),
    ]
    ready = releasable(lines, available_now=5, today=TODAY, release=PreorderRelease.ON_RELEASE_DATE)
    # 2 stay promised to the pre-order, 2 go to BACK-1, BACK-2 (5) does not fit, BACK-3 (1) does.
    assert [w.order_id for w in ready] == ["BACK-1", "BACK-3"]
    early = releasable(lines, available_now=5, today=TODAY, release=PreorderRelease.ON_STOCK_ARRIVAL)
    assert [w.order_id for w in early] == ["EARLY-PRE", "BACK-1", "BACK-3"]
    on_the_day = releasable(lines, 5, TODAY + timedelta(days=5), PreorderRelease.ON_RELEASE_DATE)
    assert [w.order_id for w in on_the_day] == ["EARLY-PRE", "BACK-1", "BACK-3"]


@settings(max_examples=300, deadline=None)
@given(
    quantities=st.lists(st.integers(1, 6), min_size=1, max_size=12),
    preorder=st.lists(st.booleans(), min_size=12, max_size=12),
    available=st.integers(0, 30),
    inbound=st.lists(st.tuples(st.integers(1, 10), st.integers(0, 20)), max_size=4),
    mode=st.sampled_from(list(PreorderRelease)),
)
def test_the_queue_never_promises_or_releases_more_than_the_supply(
    quantities: list[int],
    preorder: list[bool],
    available: int,
    inbound: list[tuple[int, int]],
    mode: PreorderRelease,
) -> None:
    lines = [
        WaitingLine(
            f"O{i}",
            "1",
            "SKU",
            q,
            T0 + timedelta(minutes=i),
            TODAY + timedelta(days=3) if preorder[i] else None,
        )
        for i, q in enumerate(quantities)
    ]
    ready = releasable(lines, available, TODAY, mode)
    assert sum(w.quantity for w in ready) <= available
    assert ready == [w for w in queue(lines) if w in ready]  # in queue order
    supply = [
        Inbound("DC", "SKU", f"PO{i}", q, TODAY + timedelta(days=d)) for i, (q, d) in enumerate(inbound)
    ]
    dates = expected_dates(lines, available, supply, TODAY)
    total = available + sum(s.quantity for s in supply)
    dated = [w for w in queue(lines) if dates[w.key] is not None]
    assert sum(w.quantity for w in dated) <= total
    # Dates never go backwards down the queue for back-orders (first come, first served).
    back = [dates[w.key] for w in queue(lines) if w.release_on is None and dates[w.key] is not None]
    assert back == sorted(back)  # type: ignore[type-var]


def _preorder_order(ship_complete: bool = False):  # type: ignore[no-untyped-def]
    return order(
        "PRE-1",
        [
            OrderLine(line_id="1", sku="ON-SALE", quantity=1, unit_price=Decimal("10.00")),
            OrderLine(
                line_id="2",
                sku="GAME",
                quantity=2,
                unit_price=Decimal("10.00"),
                release_date=TODAY + timedelta(days=7),
            ),
        ],
        ship_complete=ship_complete,
    )


def test_only_what_is_on_sale_is_planned_today_and_a_ship_complete_order_waits_whole() -> None:
    o = _preorder_order()
    part = order_to_plan_now(o, TODAY)
    assert part is not None and [line.line_id for line in part.lines] == ["1"]
    assert order_to_plan_now(_preorder_order(ship_complete=True), TODAY) is None
    assert order_to_plan_now(o, TODAY + timedelta(days=7)) is o  # released: nothing waits


def test_a_plan_of_the_rest_carries_the_preorder_lines_as_waiting_with_the_reason() -> None:
    o = _preorder_order()
    now_part = order_to_plan_now(o, TODAY)
    assert now_part is not None
    plan_now = preorder_plan(now_part, sequence=1, plan_version=1, policy_version="p", now=T0).model_copy(
        update={"outcome": PlanOutcome.SHIP, "backordered": ()}
    )
    plan = with_preorders(plan_now, o, TODAY)
    assert plan.outcome is PlanOutcome.PARTIAL and plan.order == o
    assert [(b.line_id, b.quantity) for b in plan.backordered] == [("2", 2)]
    assert (
        "pre-order" in plan.explanation[-1]
        and (TODAY + timedelta(days=7)).isoformat() in plan.explanation[-1]
    )
    [line] = waiting_lines(plan, since=T0)
    assert line.release_on == TODAY + timedelta(days=7) and line.sku == "GAME"


def test_an_order_of_only_unreleased_products_is_held_not_short() -> None:
    o = _preorder_order(ship_complete=True)
    plan = preorder_plan(o, sequence=1, plan_version=1, policy_version="p", now=T0)
    assert plan.outcome is PlanOutcome.BACKORDER and not plan.shipments
    assert waits_only_for_release(plan)
    # Ship complete: the on-sale line waits for the same day as the pre-order.
    assert {w.line_id: w.release_on for w in waiting_lines(plan, since=T0)} == {
        "1": TODAY + timedelta(days=7),
        "2": TODAY + timedelta(days=7),
    }
