"""The promise, without Kafka: the in-memory ledger, the quote, the token and the OpenAPI document."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from orchestrator.contract.common import (
    CarrierAssignment,
    HomeDelivery,
    ServiceLevel,
    ShipToStore,
    SkuLine,
    StorePickup,
)
from orchestrator.contract.inventory import DeltaReason, InventoryDelta, InventorySnapshot
from orchestrator.contract.orders import OrderCreated
from orchestrator.contract.pipeline import (
    PlannedShipment,
    QueueOwed,
    Repair,
    ReservationConfirmed,
    ReservationsConsumed,
    ReservationsReleased,
    ReservedShipment,
)
from orchestrator.domain.network import NetworkView
from orchestrator.domain.policy import load_policy
from orchestrator.domain.sourcing import decide
from orchestrator.promise.cli import OPENAPI_PATH, render_openapi
from orchestrator.promise.ledger import PromiseLedger
from orchestrator.promise.models import CartLine, PromiseRequest, PromiseResponse
from orchestrator.promise.openapi import openapi_document
from orchestrator.promise.quote import answer_json, cart_order, promise_answer
from orchestrator.promise.token import decode_token, promise_sentence
from tests.test_sourcing import NOW, address, order, uk_network, with_holidays
from tests.test_sourcing import line as order_line

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


def count(node_id: str, sku: str, on_hand: int, at: datetime = T0, safety: int = 0) -> InventorySnapshot:
    return InventorySnapshot(node_id=node_id, sku=sku, on_hand=on_hand, safety_stock=safety, as_of=at)


def delta(node_id: str, sku: str, change: int) -> InventoryDelta:
    return InventoryDelta(node_id=node_id, sku=sku, change=change, reason=DeltaReason.SALE, as_of=T0)


def confirmed(
    order_id: str, *shipments: tuple[str, str, list[tuple[str, str, int]]], repair: Repair | None = None
):
    """(shipment_id, node_id, [(line_id, sku, units)]) per shipment."""
    the_order = order(order_line("1", "SKU-A"))
    reserved = tuple(
        ReservedShipment(
            shipment=PlannedShipment(
                shipment_id=shipment_id,
                node_id=node_id,
                lines=tuple(SkuLine(line_id=lid, sku=sku, quantity=q) for lid, sku, q in lines),
                carrier=CarrierAssignment(carrier="rm", service_id="royal-mail-48"),
                service_level=ServiceLevel.STANDARD,
                ship_by=T0,
                promised_delivery_date=T0.date(),
                distance_km=1.0,
                shipping_cost=Decimal("3"),
                cost=3.0,
            ),
            reservation_ids=tuple(f"R-{shipment_id}-{lid}" for lid, _, _ in lines),
        )
        for shipment_id, node_id, lines in shipments
    )
    return ReservationConfirmed(
        order_id=order_id,
        plan_id=f"{order_id}-p1",
        plan_version=1,
        sequence=1,
        order=the_order,
        shipments=reserved,
        repair=repair,
    )


# --------------------------------------------------------------------------- the ledger


def test_counts_and_deltas_move_on_hand_like_reserve_does() -> None:
    ledger = PromiseLedger()
    ledger.apply(count("N1", "SKU-A", 10, safety=2), T0)
    ledger.apply(delta("N1", "SKU-A", -3), T0)
    assert ledger.stock({"SKU-A"}) == {("N1", "SKU-A"): 5}
    # A count older than the one applied changes nothing; a newer one replaces on hand.
    ledger.apply(count("N1", "SKU-A", 50, at=T0 - timedelta(hours=1)), T0)
    assert ledger.stock({"SKU-A"}) == {("N1", "SKU-A"): 5}
    ledger.apply(count("N1", "SKU-A", 4, at=T0 + timedelta(hours=1)), T0)
    assert ledger.stock({"SKU-A"}) == {("N1", "SKU-A"): 4}
    # A removal the ledger never saw stock for stops at zero.
    ledger.apply(delta("N2", "SKU-A", -3), T0)
    assert ledger.available_by_node("SKU-A") == {"N1": 4, "N2": 0}


def test_reservations_take_stock_and_their_release_gives_it_back() -> None:
    ledger = PromiseLedger()
    ledger.apply(count("N1", "SKU-A", 10), T0)
    ledger.apply(count("N2", "SKU-B", 4), T0)
    ledger.apply(confirmed("O1", ("S1", "N1", [("1", "SKU-A", 3)]), ("S2", "N2", [("2", "SKU-B", 4)])), T0)
    assert ledger.stock({"SKU-A", "SKU-B"}) == {("N1", "SKU-A"): 7, ("N2", "SKU-B"): 0}
    assert ledger.node_load(NetworkView.empty(), T0) == {"N1": 1, "N2": 1}
    ledger.apply(
        ReservationsReleased(order_id="O1", plan_id="O1-p1", reason="cancelled", cancel_order=True), T0
    )
    assert ledger.stock({"SKU-A", "SKU-B"}) == {("N1", "SKU-A"): 10, ("N2", "SKU-B"): 4}
    # Given back whole before they shipped: the shipments free their nodes' slots of the day too.
    assert ledger.node_load(NetworkView.empty(), T0) == {}


def test_a_repair_gives_back_what_the_replaced_shipment_held_for_its_lines() -> None:
    ledger = PromiseLedger()
    ledger.apply(count("N1", "SKU-A", 10), T0)
    ledger.apply(count("N2", "SKU-A", 10), T0)
    ledger.apply(confirmed("O1", ("S1", "N1", [("1", "SKU-A", 5)])), T0)
    repair = Repair(
        exception_id="E1",
        action="reroute",
        lines=(SkuLine(line_id="1", sku="SKU-A", quantity=2),),
        replaces_shipment_id="S1",
        cancel_replaced=False,
    )
    ledger.apply(confirmed("O1", ("S9", "N2", [("1", "SKU-A", 2)]), repair=repair), T0)
    # N1 keeps 3 of its 5 for the part of the line not repaired; N2 now holds the 2 repaired.
    assert ledger.stock({"SKU-A"}) == {("N1", "SKU-A"): 7, ("N2", "SKU-A"): 8}
    assert ledger.node_load(NetworkView.empty(), T0) == {"N1": 1, "N2": 1}, "S1 still ships 3"


def test_a_back_order_of_one_shipment_gives_back_that_shipment_only() -> None:
    """A repair whose lines all wait for stock confirms nothing: reserve names the shipment it gave back."""
    ledger = PromiseLedger()
    ledger.apply(count("N1", "SKU-A", 10), T0)
    ledger.apply(count("N2", "SKU-B", 4), T0)
    ledger.apply(confirmed("O1", ("S1", "N1", [("1", "SKU-A", 3)]), ("S2", "N2", [("2", "SKU-B", 4)])), T0)
    ledger.apply(
        ReservationsReleased(
            order_id="O1", plan_id=None, reason="backorder", cancel_order=False, shipment_ids=("S1",)
        ),
        T0,
    )
    assert ledger.stock({"SKU-A", "SKU-B"}) == {("N1", "SKU-A"): 10, ("N2", "SKU-B"): 0}
    assert ledger.node_load(NetworkView.empty(), T0) == {"N2": 1}, "S2 still ships"


def test_a_shipment_given_back_before_its_confirmation_holds_nothing() -> None:
    """An undone repair's give-back comes from another of reserve's partitions than its confirmation."""
    ledger = PromiseLedger()
    ledger.apply(count("N1", "SKU-A", 10), T0)
    ledger.apply(
        ReservationsReleased(
            order_id="O1", plan_id="O1-p1", reason="undone", cancel_order=False, shipment_ids=("S1",)
        ),
        T0,
    )
    ledger.apply(confirmed("O1", ("S1", "N1", [("1", "SKU-A", 3)])), T0)
    assert ledger.stock({"SKU-A"}) == {("N1", "SKU-A"): 10}
    assert ledger.node_load(NetworkView.empty(), T0) == {}


def shipped(order_id: str, shipment_id: str, node_id: str, at: datetime, *lines: tuple[str, str, int]):
    return ReservationsConsumed(
        order_id=order_id,
        shipment_id=shipment_id,
        work_order_id=f"WO-{shipment_id}",
        node_id=node_id,
        shipped_at=at,
        lines=tuple(SkuLine(line_id=lid, sku=sku, quantity=q) for lid, sku, q in lines),
    )


def test_a_shipment_consumes_its_reservation_so_availability_is_not_taken_twice() -> None:
    ledger = PromiseLedger()
    ledger.apply(count("N1", "SKU-A", 10), T0)
    ledger.apply(confirmed("O1", ("S1", "N1", [("1", "SKU-A", 3)])), T0)
    assert ledger.stock({"SKU-A"}) == {("N1", "SKU-A"): 7}
    ledger.apply(shipped("O1", "S1", "N1", T0 + timedelta(hours=1), ("1", "SKU-A", 3)), T0)
    position = ledger.positions[("N1", "SKU-A")]
    assert (position.on_hand, position.reserved) == (7, 0)
    assert ledger.stock({"SKU-A"}) == {("N1", "SKU-A"): 7}, "shipping changes nothing one can promise"
    # The node's count after the shipment says 7: still 7, not 4.
    ledger.apply(count("N1", "SKU-A", 7, at=T0 + timedelta(hours=2)), T0)
    assert ledger.stock({"SKU-A"}) == {("N1", "SKU-A"): 7}
    # A cancellation after the shipment gives nothing back: the units left, and the slot was used.
    ledger.apply(ReservationsReleased(order_id="O1", plan_id="O1-p1", reason="late", cancel_order=True), T0)
    assert ledger.stock({"SKU-A"}) == {("N1", "SKU-A"): 7}
    assert ledger.node_load(NetworkView.empty(), T0) == {"N1": 1}


def test_a_shipment_that_left_short_gives_back_what_it_did_not_take() -> None:
    ledger = PromiseLedger()
    ledger.apply(count("N1", "SKU-A", 10), T0)
    ledger.apply(count("N1", "SKU-B", 4), T0)
    ledger.apply(confirmed("O1", ("S1", "N1", [("1", "SKU-A", 3), ("2", "SKU-B", 2)])), T0)
    assert ledger.stock({"SKU-A", "SKU-B"}) == {("N1", "SKU-A"): 7, ("N1", "SKU-B"): 2}
    # 2 of A left; the third A and both B were picked short: reserve gives them back as it ships.
    left = shipped("O1", "S1", "N1", T0 + timedelta(hours=1), ("1", "SKU-A", 2)).model_copy(
        update={
            "released": (
                SkuLine(line_id="1", sku="SKU-A", quantity=1),
                SkuLine(line_id="2", sku="SKU-B", quantity=2),
            )
        }
    )
    ledger.apply(left, T0)
    a, b = ledger.positions[("N1", "SKU-A")], ledger.positions[("N1", "SKU-B")]
    assert (a.on_hand, a.reserved, b.on_hand, b.reserved) == (8, 0, 4, 0)
    assert "O1" not in ledger.held, "the order holds nothing once its only shipment left"


def test_a_count_taken_before_a_shipment_does_not_put_its_units_back() -> None:
    ledger = PromiseLedger()
    ledger.apply(count("N1", "SKU-A", 10), T0)
    ledger.apply(confirmed("O1", ("S1", "N1", [("1", "SKU-A", 4)])), T0)
    ledger.apply(shipped("O1", "S1", "N1", T0 + timedelta(hours=2), ("1", "SKU-A", 4)), T0)
    # Counted at 1 h (10 there, the 4 not gone yet) but received after the shipment.
    ledger.apply(count("N1", "SKU-A", 10, at=T0 + timedelta(hours=1)), T0)
    assert ledger.stock({"SKU-A"}) == {("N1", "SKU-A"): 6}
    # A count after the shipment has seen it: the log forgets it.
    ledger.apply(count("N1", "SKU-A", 5, at=T0 + timedelta(hours=3)), T0)
    assert ledger.stock({"SKU-A"}) == {("N1", "SKU-A"): 5}
    assert ledger.positions[("N1", "SKU-A")].shipped is None


def test_a_shipment_older_than_the_count_does_not_come_off_it_again() -> None:
    ledger = PromiseLedger()
    ledger.apply(count("N1", "SKU-A", 10), T0)
    ledger.apply(confirmed("O1", ("S1", "N1", [("1", "SKU-A", 4)])), T0)
    # The count at 2 h already lacks the 4 shipped at 1 h; the shipment is heard of after it.
    ledger.apply(count("N1", "SKU-A", 6, at=T0 + timedelta(hours=2)), T0)
    ledger.apply(shipped("O1", "S1", "N1", T0 + timedelta(hours=1), ("1", "SKU-A", 4)), T0)
    assert ledger.stock({"SKU-A"}) == {("N1", "SKU-A"): 6}


def test_what_the_queue_is_owed_is_not_offered_again() -> None:
    """Like decide-node, a promise is made behind the queue: units owed to waiting lines are set
    aside, from the nodes holding the most first."""
    ledger = PromiseLedger()
    ledger.apply(count("N1", "SKU-A", 5), T0)
    ledger.apply(count("N2", "SKU-A", 2), T0)
    ledger.apply(QueueOwed(sku="SKU-A", units=4, as_of=T0), T0)
    assert ledger.stock({"SKU-A"}) == {("N1", "SKU-A"): 1, ("N2", "SKU-A"): 2}
    assert ledger.available_by_node("SKU-A") == {"N1": 1, "N2": 2}
    # The queue's latest word replaces the earlier one; 0: nothing waits any more.
    ledger.apply(QueueOwed(sku="SKU-A", units=0, as_of=T0 + timedelta(minutes=1)), T0)
    assert ledger.stock({"SKU-A"}) == {("N1", "SKU-A"): 5, ("N2", "SKU-A"): 2}


moves = st.lists(
    st.one_of(
        st.tuples(st.just("count"), st.integers(0, 30), st.integers(0, 20)),
        st.tuples(st.just("ship"), st.integers(1, 5), st.integers(0, 20)),
        st.tuples(st.just("delta"), st.integers(-5, 5).filter(bool), st.just(0)),
    ),
    max_size=12,
)


@given(moves, st.randoms(use_true_random=False))
def test_counts_and_shipments_give_one_position_whatever_order_they_arrive_in(
    history: list[tuple[str, int, int]], rng
) -> None:
    """Counts and shipments are stamped where they happened; the Kafka topics they travel on are
    independent, so a ledger may hear them in any order. Without deltas (which carry no order of
    their own) the position must come out the same."""
    ledger_events = []
    for i, (kind, value, minute) in enumerate(history):
        at = T0 + timedelta(minutes=minute, seconds=i)  # distinct times: no count ties a shipment
        if kind == "count":
            ledger_events.append(count("N1", "SKU-A", value, at=at))
        elif kind == "ship":
            ledger_events.append(shipped("O1", f"S{i}", "N1", at, ("1", "SKU-A", value)))
    ledger_events.insert(0, count("N1", "SKU-A", 100, at=T0 - timedelta(days=1)))

    def position(events: list) -> tuple[int, list]:
        ledger = PromiseLedger()
        for e in events:
            ledger.apply(e, T0)
        p = ledger.positions[("N1", "SKU-A")]
        return p.on_hand, sorted(p.shipped or [])

    shuffled = ledger_events[:1] + rng.sample(ledger_events[1:], len(ledger_events) - 1)
    assert position(shuffled) == position(ledger_events)


# --------------------------------------------------------------------------- the quote


def quote(request: PromiseRequest, **inputs) -> PromiseResponse:
    """The answer the service would write, read back as its model."""
    return PromiseResponse.model_validate_json(answer_json(promise_answer(request, **inputs)))


STOCK = {
    ("DC-MANCHESTER", "SKU-KETTLE"): 5,
    ("DC-LONDON", "SKU-KETTLE"): 5,
    ("DC-LONDON", "SKU-TOASTER"): 2,
}


def request(*lines: tuple[str, int], to: str = "leeds", **fields) -> PromiseRequest:
    return PromiseRequest(
        cart=tuple(CartLine(sku=sku, quantity=q, unit_weight_kg=Decimal("1.000")) for sku, q in lines),
        ship_to=address(to),
        **fields,
    )


def test_a_quote_gives_every_delivery_option_its_plan_and_the_network_availability() -> None:
    req = request(
        ("SKU-KETTLE", 1),
        delivery_options=(HomeDelivery(kind="standard"), HomeDelivery(kind="next_day")),
    )
    answer = quote(req, network=uk_network(), stock=STOCK, capacity_used={}, policy=load_policy(), now=NOW)
    standard, next_day = answer.options
    assert [s.node_id for s in standard.shipments] == ["DC-MANCHESTER"]  # the nearer DC to Leeds
    assert standard.promised_delivery_date is not None and next_day.promised_delivery_date is not None
    assert next_day.promised_delivery_date < standard.promised_delivery_date
    assert next_day.shipments[0].service_level is ServiceLevel.NEXT_DAY
    assert not standard.split and standard.promise_token
    # The customer gave no date: the explanation must not show the far-off one the quote planned with.
    made_up = (NOW + timedelta(days=366)).date().isoformat()
    assert all(made_up not in sentence for sentence in standard.explanation), standard.explanation
    assert answer.availability[0].network == 10
    assert {n.node_id: n.available for n in answer.availability[0].nodes} == {
        "DC-MANCHESTER": 5,
        "DC-LONDON": 5,
    }


def test_a_cart_no_node_holds_whole_is_split_and_says_so() -> None:
    answer = quote(
        request(("SKU-KETTLE", 1), ("SKU-TOASTER", 2)),
        network=uk_network(),
        stock={**STOCK, ("DC-LONDON", "SKU-KETTLE"): 0},
        capacity_used={},
        policy=load_policy(),
        now=NOW,
    )
    (option,) = answer.options
    assert option.split and sorted(s.node_id for s in option.shipments) == ["DC-LONDON", "DC-MANCHESTER"]


#: Random checkouts on the UK network: stock, a cart, a destination and a delivery speed.
CHECKOUTS = {
    "stock": st.dictionaries(
        st.tuples(
            st.sampled_from(["DC-MANCHESTER", "DC-LONDON", "STORE-LEEDS-01"]),
            st.sampled_from(["A", "B", "C"]),
        ),
        st.integers(0, 4),
    ),
    "cart": st.lists(
        st.tuples(st.sampled_from(["A", "B", "C"]), st.integers(1, 3)),
        min_size=1,
        max_size=3,
        unique_by=lambda t: t[0],
    ),
    "to": st.sampled_from(["leeds", "london", "glasgow", "york"]),
    "kind": st.sampled_from(["standard", "express", "next_day"]),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    **CHECKOUTS,
    # Any moment of a week: before and after the cut-offs, Friday evening and the weekend included.
    moment=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=7) - timedelta(seconds=1)),
    # Holidays in the nodes' and carriers' calendars over the fortnight.
    holidays=st.sets(st.integers(min_value=0, max_value=13), max_size=4),
)
def test_the_order_placed_with_the_promised_date_gets_the_promised_plan(
    stock: dict[tuple[str, str], int],
    cart: list[tuple[str, int]],
    to: str,
    kind: str,
    moment: timedelta,
    holidays: set[int],
) -> None:
    """The promise is the plan decide-node makes for the order placed after it, on the same state."""
    monday = datetime(2025, 3, 10, tzinfo=UTC)
    now = monday + moment
    req = request(*cart, to=to, delivery_options=(HomeDelivery(kind=kind),))  # type: ignore[arg-type]
    calendar = tuple(sorted(monday.date() + timedelta(days=d) for d in holidays))
    network, policy = with_holidays(uk_network(), calendar), load_policy()
    (option,) = quote(req, network=network, stock=stock, capacity_used={}, policy=policy, now=now).options
    placed = cart_order(req, req.delivery_options[0], now)
    if option.promised_delivery_date is not None:
        placed = placed.model_copy(update={"promised_delivery_date": option.promised_delivery_date})
    plan = decide(placed, network=network, stock=stock, capacity_used={}, policy=policy, now=now)
    assert plan.outcome is option.outcome
    assert [(s.node_id, s.carrier.service_id, s.promised_delivery_date) for s in plan.shipments] == [
        (s.node_id, s.carrier.service_id, s.promised_delivery_date) for s in option.shipments
    ]
    if option.promise_token:
        assert promise_sentence(plan, option.promise_token).startswith("As promised")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    **CHECKOUTS,
    moment=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=7)),
    zone_hours=st.sampled_from([0, 1, -5]),
    deliver_in_days=st.none() | st.integers(0, 10),
    ship_complete=st.booleans(),
)
def test_the_answer_is_written_byte_for_byte_as_the_response_model_writes_it(
    stock: dict[tuple[str, str], int],
    cart: list[tuple[str, int]],
    to: str,
    kind: str,
    moment: timedelta,
    zone_hours: int,
    deliver_in_days: int | None,
    ship_complete: bool,
) -> None:
    """The service writes its answer without validating it again: what it writes must be what the
    validated `PromiseResponse` writes, and its promise tokens what `PromiseToken` writes."""
    now = (datetime(2025, 3, 10, 6, 30, 0, 250_000, tzinfo=UTC) + moment).astimezone(
        timezone(timedelta(hours=zone_hours))
    )
    req = request(
        *cart,
        to=to,
        delivery_options=(
            HomeDelivery(kind=kind),  # type: ignore[arg-type]
            StorePickup(kind="bopis", pickup_store_id="STORE-LEEDS-01"),
            ShipToStore(kind="ship_to_store", store_id="STORE-LEEDS-01"),
        ),
        deliver_by=None if deliver_in_days is None else now.date() + timedelta(days=deliver_in_days),
        ship_complete=ship_complete,
    )
    answer = promise_answer(
        req, network=uk_network(), stock=stock, capacity_used={}, policy=load_policy(), now=now
    )
    written = answer_json(answer)
    model = PromiseResponse.model_validate(answer)
    assert written == model.model_dump_json().encode()
    assert PromiseResponse.model_validate_json(written) == model
    for option in model.options:
        if option.promise_token is not None:
            token = decode_token(option.promise_token)
            by_model = base64.urlsafe_b64encode(token.model_dump_json().encode()).decode().rstrip("=")
            assert option.promise_token == by_model
            assert token.at == now


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**CHECKOUTS)
def test_a_plan_decided_without_node_verdicts_is_the_same_plan(
    stock: dict[tuple[str, str], int], cart: list[tuple[str, int]], to: str, kind: str
) -> None:
    """Quotes leave out the per-node verdicts; nothing else of the plan may change with them."""
    req = request(*cart, to=to, delivery_options=(HomeDelivery(kind=kind),))  # type: ignore[arg-type]
    placed = cart_order(req, req.delivery_options[0], NOW)
    network, policy = uk_network(), load_policy()
    full = decide(placed, network=network, stock=stock, capacity_used={}, policy=policy, now=NOW)
    lean = decide(
        placed, network=network, stock=stock, capacity_used={}, policy=policy, now=NOW, verdicts=False
    )
    assert full.candidates and lean.candidates == ()
    assert lean == full.model_copy(update={"candidates": ()})


def test_a_next_day_cart_quoted_on_friday_evening_is_promised_for_tuesday() -> None:
    # After DC-MANCHESTER's 17:00 cut-off the carrier next collects on Monday; next day is Tuesday.
    friday_evening = datetime(2025, 3, 14, 18, 0, tzinfo=UTC)
    req = request(("SKU-KETTLE", 1), delivery_options=(HomeDelivery(kind="next_day"),))
    (option,) = quote(
        req, network=uk_network(), stock=STOCK, capacity_used={}, policy=load_policy(), now=friday_evening
    ).options
    assert [s.node_id for s in option.shipments] == ["DC-MANCHESTER"]
    assert option.shipments[0].ship_by == datetime(2025, 3, 17, 17, 0, tzinfo=UTC)
    assert option.promised_delivery_date == date(2025, 3, 18)


def test_the_order_says_how_and_why_it_differs_from_its_promise() -> None:
    req = request(("SKU-KETTLE", 2))
    network, policy = uk_network(), load_policy()
    (option,) = quote(req, network=network, stock=STOCK, capacity_used={}, policy=policy, now=NOW).options
    assert option.promise_token is not None
    assert decode_token(option.promise_token).shipments[0].node == "DC-MANCHESTER"
    gone = {**STOCK, ("DC-MANCHESTER", "SKU-KETTLE"): 1}
    placed = cart_order(req, req.delivery_options[0], NOW)
    plan = decide(placed, network=network, stock=gone, capacity_used={}, policy=policy, now=NOW)
    sentence = promise_sentence(plan, option.promise_token)
    assert sentence.startswith("Differs from the promise made at")
    assert "DC-MANCHESTER was to send 2 of SKU-KETTLE" in sentence
    assert "SKU-KETTLE" in sentence.split(":", 2)[-1]  # the node's own reason names the short SKU
    assert "cannot be read" in promise_sentence(plan, "not-a-token")


#: Any cart line the API may be sent: SKUs held and not, drop-ship vendors that are nodes and not.
ANY_LINE = st.fixed_dictionaries(
    {"sku": st.sampled_from(["A", "B", "C", "SKU-UNKNOWN"]), "quantity": st.integers(1, 100_000)},
    optional={
        "unit_price": st.decimals(min_value=0, max_value=10**6, places=2).map(str),
        "unit_weight_kg": st.decimals(min_value="0.001", max_value=10**5, places=3).map(str),
        "labels": st.lists(
            st.sampled_from(["hazmat", "oversize", "fragile", "perishable", "high_value", "age_restricted"]),
            max_size=3,
        ),
        "drop_ship_vendor_id": st.sampled_from(["VEND-1", "DC-LONDON", "NO-SUCH-NODE"]),
    },
)
#: Any delivery option, to stores that exist and are stores, that are not stores, and that do not exist.
ANY_OPTION = st.one_of(
    st.fixed_dictionaries({"kind": st.sampled_from(["standard", "express", "next_day"])}),
    st.fixed_dictionaries(
        {
            "kind": st.just("bopis"),
            "pickup_store_id": st.sampled_from(["STORE-LEEDS-01", "DC-LONDON", "NONE"]),
        }
    ),
    st.fixed_dictionaries(
        {
            "kind": st.just("ship_to_store"),
            "store_id": st.sampled_from(["STORE-LEEDS-01", "DC-LONDON", "NONE"]),
        }
    ),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cart=st.lists(ANY_LINE, min_size=1, max_size=6),
    options=st.lists(ANY_OPTION, min_size=1, max_size=3),
    to=st.none() | st.sampled_from(["leeds", "london", "glasgow"]),
    fields=st.fixed_dictionaries(
        {},
        optional={
            "deliver_by": st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 1, 1)).map(str),
            "channel": st.sampled_from(["web", "app", "store", "marketplace", "b2b_edi", "call_centre"]),
            "customer_tier": st.sampled_from(["standard", "silver", "gold", "platinum"]),
            "ship_complete": st.booleans(),
            "priority": st.booleans(),
        },
    ),
    stock=CHECKOUTS["stock"],
)
def test_every_cart_the_api_accepts_is_answered(
    cart: list[dict], options: list[dict], to: str | None, fields: dict, stock: dict[tuple[str, str], int]
) -> None:
    """A request that passes validation gets an answer, never an error 500: no address, stores that
    are not stores, vendors that are not nodes, dates passed, every label and channel."""
    body = {"cart": cart, "delivery_options": options, **fields}
    if to is not None:
        body["ship_to"] = address(to).model_dump(mode="json")
    try:
        req = PromiseRequest.model_validate(body)
    except ValueError:
        return  # refused with the reason
    answer = quote(req, network=uk_network(), stock=stock, capacity_used={}, policy=load_policy(), now=NOW)
    assert len(answer.options) == len(req.delivery_options)
    assert [a.sku for a in answer.availability] == list(dict.fromkeys(line.sku for line in req.cart))


def test_a_cart_is_refused_with_the_reason_when_it_is_not_one() -> None:
    with pytest.raises(ValueError, match="cart"):
        PromiseRequest.model_validate({"cart": [], "ship_to": None})
    with pytest.raises(ValueError, match="quantity"):
        PromiseRequest.model_validate({"cart": [{"sku": "A", "quantity": 0}]})
    # Both once made an order that failed its own validation: an error 500 instead of the reason.
    with pytest.raises(ValueError, match="labels must not repeat: hazmat"):
        PromiseRequest.model_validate({"cart": [{"sku": "A", "quantity": 1, "labels": ["hazmat", "hazmat"]}]})
    with pytest.raises(ValueError, match="the cart's total"):
        PromiseRequest.model_validate(
            {"cart": [{"sku": "A", "quantity": 100_000, "unit_price": "9999999999.5"}]}
        )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(
        st.fixed_dictionaries(
            {
                "sku": st.sampled_from(["A", "B", " C "]),
                "quantity": st.integers(1, 100_000),
                "unit_price": st.decimals(min_value=0, max_value=10**9, places=4),
                "unit_weight_kg": st.none() | st.decimals(min_value="0.001", max_value=10**6, places=3),
                "labels": st.lists(st.sampled_from(["hazmat", "oversize", "fragile"]), max_size=3),
                "drop_ship_vendor_id": st.none() | st.just("VEND-1"),
            }
        ),
        min_size=1,
        max_size=5,
    ),
    fields=st.fixed_dictionaries(
        {},
        optional={
            "channel": st.sampled_from(["web", "marketplace", "store", "b2b_edi"]),
            "customer_tier": st.sampled_from(["standard", "gold"]),
            "ship_complete": st.booleans(),
            "priority": st.booleans(),
            "deliver_by": st.dates(min_value=date(2025, 1, 1), max_value=date(2027, 1, 1)).map(str),
            "currency": st.just("EUR"),
        },
    ),
)
# The largest total an order can have, and one past it.
@example(lines=[{"sku": "A", "quantity": 100_000, "unit_price": Decimal("999999999.9999")}], fields={})
@example(lines=[{"sku": "A", "quantity": 100_000, "unit_price": Decimal("1000000000")}], fields={})
def test_the_order_a_quote_plans_is_the_validated_order(lines: list[dict], fields: dict) -> None:
    """`cart_order` skips validating the order: every valid request must make a valid order, the
    same the order's own validation makes of it."""
    try:
        req = PromiseRequest.model_validate(
            {
                "cart": [
                    {k: str(v) if isinstance(v, Decimal) else v for k, v in line.items()} for line in lines
                ]
            }
            | fields
            | {"ship_to": address("leeds").model_dump(mode="json")}
        )
    except ValueError:
        return  # refused with the reason: nothing is planned
    for delivery in (HomeDelivery(kind="express"), StorePickup(kind="bopis", pickup_store_id="S1")):
        built = cart_order(req, delivery, NOW)
        assert OrderCreated.model_validate(built.model_dump()) == built


# --------------------------------------------------------------------------- the document


def test_the_openapi_document_is_valid_and_the_checked_in_copy_is_current() -> None:
    validate(openapi_document())
    assert OPENAPI_PATH.read_text(encoding="utf-8") == render_openapi(), "run `orchestrator promise openapi`"
    paths = json.loads(render_openapi())["paths"]
    assert set(paths) == {"/v1/promise", "/v1/availability", "/healthz"}
