"""Returns and exchanges, the pure core: where returned goods go, and the life of a return.

No Kafka and no database: the routing and the state machine are called directly, the way the
returns stage calls them, and the events they produce are checked as the OMS, a node and the
ledger would see them.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from orchestrator.contract.base import EventPayload
from orchestrator.contract.common import (
    Address,
    Channel,
    CustomerTier,
    HomeDelivery,
    NodeCapability,
    NodeKind,
    OrderLine,
    ProductLabel,
    ServiceLevel,
    SkuLine,
)
from orchestrator.contract.examples import example
from orchestrator.contract.inventory import DeltaReason, InventoryDelta
from orchestrator.contract.network import CarrierServiceUpserted, DistanceBand, DistanceBandCost, NodeUpserted
from orchestrator.contract.orders import OrderCreated
from orchestrator.contract.pipeline import RedecideRequested, RepairOutcome
from orchestrator.contract.registry import EVENT_TYPES
from orchestrator.contract.returns import (
    InspectedLine,
    Replacement,
    ReturnAuthorised,
    ReturnCancelled,
    ReturnInspected,
    ReturnLine,
    ReturnMethod,
    ReturnOrderCancelRequested,
    ReturnOrderReleased,
    ReturnReason,
    ReturnReceived,
    ReturnResolution,
    ReturnResolutionChanged,
    ReturnState,
    ReturnStatusChanged,
)
from orchestrator.domain.network import NetworkView, network_from_events
from orchestrator.domain.repair import repair_order
from orchestrator.domain.return_routing import ReturnRoute, Unroutable, route_return
from orchestrator.domain.returns import (
    ReturnCase,
    ReturnRefused,
    Step,
    authorise,
    cancel,
    change_resolution,
    inspect,
    parse_replacement_id,
    receive,
    replacement_exception_id,
    replacement_outcome,
    returned_lines,
    units_in_live_returns,
    with_shipped_removed_lines,
)
from orchestrator.domain.returns_policy import (
    RETURNS_POLICY_FILE_ENV,
    ReturnsPolicy,
    ReturnsPolicyError,
    load_returns_policy,
)
from orchestrator.domain.timeline import describe

NOW = datetime(2025, 3, 20, 10, 0, tzinfo=UTC)
PACKAGED = Path(__file__).resolve().parents[1] / "orchestrator" / "policies" / "returns.yaml"

# Places in England (lat, lon, postcode).
LONDON = (51.5074, -0.1278, "EC1A 1BB")
MANCHESTER = (53.4808, -2.2426, "M1 1AE")
BIRMINGHAM = (52.4862, -1.8904, "B1 1AA")
LEEDS = (53.8008, -1.5491, "LS1 1UR")
READING = (51.4543, -0.9781, "RG1 1AA")


@pytest.fixture(autouse=True)
def _no_policy_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RETURNS_POLICY_FILE_ENV, raising=False)


def address(place: tuple[float, float, str]) -> Address:
    lat, lon, postcode = place
    return Address(
        line1="1 High St", city="Town", postal_code=postcode, country="GB", latitude=lat, longitude=lon
    )


def node(
    node_id: str,
    place: tuple[float, float, str],
    kind: NodeKind = NodeKind.DC,
    *caps: NodeCapability,
    up: bool = True,
) -> NodeUpserted:
    return NodeUpserted(
        node_id=node_id,
        kind=kind,
        name=node_id,
        location=address(place),
        capabilities=caps,
        daily_capacity=1000,
        cutoff_local=time(17, 0),
        timezone="Europe/London",
        open=up,
    )


def service(
    service_id: str, level: ServiceLevel, base: str, *, hazmat: bool = False
) -> CarrierServiceUpserted:
    return CarrierServiceUpserted(
        service_id=service_id,
        carrier="tcarrier",
        name=service_id,
        service_level=level,
        transit_days=2,
        reliability=0.97,
        hazmat_allowed=hazmat,
        countries=("GB",),
        cost=DistanceBandCost(
            kind="distance_bands",
            currency="GBP",
            base=Decimal(base),
            per_kg=Decimal("0.40"),
            bands=(
                DistanceBand(max_km=100, surcharge=Decimal("0")),
                DistanceBand(max_km=1000, surcharge=Decimal("3")),
            ),
        ),
    )


SERVICES = (
    service("ground", ServiceLevel.GROUND, "3.50", hazmat=True),
    service("express", ServiceLevel.EXPRESS, "2.00"),  # cheaper, but returns are not urgent
)


def network(*nodes: NodeUpserted) -> NetworkView:
    return network_from_events([*SERVICES, *nodes])


def policy(**changes: Any) -> ReturnsPolicy:
    return load_returns_policy().model_copy(update=changes)


def order(
    *lines: tuple[str, int, str],
    to: tuple[float, float, str] = LONDON,
    tier: CustomerTier = CustomerTier.STANDARD,
    labels: dict[str, tuple[ProductLabel, ...]] | None = None,
) -> OrderCreated:
    order_lines = tuple(
        OrderLine(
            line_id=str(i + 1),
            sku=sku,
            quantity=qty,
            unit_price=Decimal(price),
            labels=(labels or {}).get(sku, ()),
        )
        for i, (sku, qty, price) in enumerate(lines)
    )
    return OrderCreated(
        order_id="ORD-1",
        channel=Channel.WEB,
        customer_id="C-1",
        customer_tier=tier,
        placed_at=NOW - timedelta(days=10),
        ship_to=address(to),
        lines=order_lines,
        order_total=sum((x.unit_price * x.quantity for x in order_lines), Decimal("4.99")),
        currency="GBP",
        delivery=HomeDelivery(kind="standard"),
        promised_delivery_date=(NOW - timedelta(days=7)).date(),
    )


ORDER = order(("SKU-KETTLE", 1, "49.99"), ("SKU-MUG", 4, "6.00"))
NET = network(
    node("DC-LONDON", LONDON),
    node("DC-LEEDS", LEEDS),
    node("STORE-READING", READING, NodeKind.STORE),
    node("STORE-BHAM", BIRMINGHAM, NodeKind.STORE),
)


def authorised(
    *lines: tuple[str, str, int],
    resolution: ReturnResolution = ReturnResolution.REFUND,
    reason: ReturnReason = ReturnReason.CHANGED_MIND,
    replacements: tuple[Replacement, ...] = (),
    method: ReturnMethod = ReturnMethod.SHIP_BACK,
    store_id: str | None = None,
    return_id: str = "RMA-1",
) -> ReturnAuthorised:
    return ReturnAuthorised(
        return_id=return_id,
        order_id="ORD-1",
        lines=tuple(
            ReturnLine(line_id=i, sku=s, quantity=q) for i, s, q in lines or (("1", "SKU-KETTLE", 1),)
        ),
        reason=reason,
        resolution=resolution,
        replacements=replacements,
        method=method,
        store_id=store_id,
        authorised_at=NOW,
    )


def start(
    request: ReturnAuthorised,
    *,
    the_order: OrderCreated = ORDER,
    net: NetworkView = NET,
    stocked: frozenset[tuple[str, str]] = frozenset(),
    rules: ReturnsPolicy | None = None,
) -> Step:
    rules = rules or policy()
    lines = returned_lines(request, the_order, {})
    where = route_return(
        lines=lines,
        resolution=request.resolution,
        method=request.method,
        store_id=request.store_id,
        origin=the_order.ship_to,
        network=net,
        stocked=stocked,
        policy=rules,
        now=NOW,
    )
    return authorise(
        request, order=the_order, order_sequence=1, lines=lines, route=where, policy=rules, now=NOW
    )


def of(step: Step, kind: type[EventPayload]) -> list[Any]:
    return [e for e in step.events if isinstance(e, kind)]


def states(step: Step) -> list[str]:
    return [e.state.value for e in of(step, ReturnStatusChanged)]


def received(case: ReturnCase, *lines: tuple[str, str, int], node_id: str | None = None) -> ReturnReceived:
    return ReturnReceived(
        return_order_id=case.return_order_id or "RO-?",
        return_id=case.return_id,
        order_id=case.order_id,
        node_id=node_id or case.node_id or "DC-LONDON",
        occurred_at=NOW,
        lines=tuple(SkuLine(line_id=i, sku=s, quantity=q) for i, s, q in lines or (("1", "SKU-KETTLE", 1),)),
    )


def inspected(case: ReturnCase, *lines: tuple[str, str, int, int]) -> ReturnInspected:
    return ReturnInspected(
        return_order_id=case.return_order_id or "RO-?",
        return_id=case.return_id,
        order_id=case.order_id,
        node_id=case.node_id or "DC-LONDON",
        occurred_at=NOW,
        lines=tuple(
            InspectedLine(line_id=i, sku=s, restockable=r, not_restockable=n)
            for i, s, r, n in lines or (("1", "SKU-KETTLE", 1, 0),)
        ),
    )


def changed(resolution: ReturnResolution, *replacements: Replacement) -> ReturnResolutionChanged:
    return ReturnResolutionChanged(
        return_id="RMA-1", order_id="ORD-1", resolution=resolution, replacements=replacements, changed_at=NOW
    )


def reroute(step: Step, where: ReturnResolution = ReturnResolution.REFUND) -> ReturnRoute | Unroutable:
    return route_return(
        lines=step.case.lines,
        resolution=where,
        method=step.case.method,
        store_id=step.case.store_id,
        origin=ORDER.ship_to,
        network=NET,
        stocked=frozenset(),
        policy=policy(),
        now=NOW,
    )


def released_ok(step: Step, work_order: str = "WO-R1") -> RepairOutcome:
    [request] = of(step, RedecideRequested)
    assert request.repair is not None
    return RepairOutcome(
        order_id="ORD-1",
        exception_id=request.repair.exception_id,
        action=request.repair.action,
        succeeded=True,
        detail=f"{work_order} released to DC-LONDON",
        work_order_ids=(work_order,),
    )


def attempt_of(step: Step) -> int:
    [request] = of(step, RedecideRequested)
    assert request.repair is not None
    parsed = parse_replacement_id(request.repair.exception_id)
    assert parsed is not None
    return parsed[1]


# ---------------------------------------------------------------------------
# The policy file
# ---------------------------------------------------------------------------


def test_the_packaged_policy_loads_and_sets_every_field() -> None:
    rules = load_returns_policy()
    assert rules.version == "returns-1"
    assert rules.refund_without_return.below == Decimal("10.00")
    assert rules.exchange.timing(ReturnReason.DAMAGED, CustomerTier.STANDARD) == "at_once"
    assert rules.exchange.timing(ReturnReason.SIZE_OR_FIT, CustomerTier.STANDARD) == "after_receipt"
    assert rules.exchange.timing(ReturnReason.SIZE_OR_FIT, CustomerTier.PLATINUM) == "at_once"
    data = yaml.safe_load(PACKAGED.read_text(encoding="utf-8"))
    assert set(data) == set(ReturnsPolicy.model_fields), "the shipped file documents every knob"
    for name, info in ReturnsPolicy.model_fields.items():
        assert info.description, name


def test_a_bad_policy_names_the_file_and_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "returns.yaml"
    bad.write_text("version: r-2\nexchange: {replacement: someday}\n", encoding="utf-8")
    monkeypatch.setenv(RETURNS_POLICY_FILE_ENV, str(bad))
    with pytest.raises(ReturnsPolicyError, match=r"returns policy .*returns\.yaml: exchange\.replacement"):
        load_returns_policy()
    bad.write_text("version: r-2\nrefund_without_return: {below: -1}\n", encoding="utf-8")
    with pytest.raises(ReturnsPolicyError, match=r"refund_without_return\.below"):
        load_returns_policy()


# ---------------------------------------------------------------------------
# Where the goods go
# ---------------------------------------------------------------------------


def test_goods_go_to_the_nearest_node_that_stocks_them() -> None:
    request = authorised()
    # London is nearer the customer, but only Leeds sells kettles: restocked there, they sell again.
    step = start(request, stocked=frozenset({("DC-LEEDS", "SKU-KETTLE")}))
    assert step.case.node_id == "DC-LEEDS"
    [work] = of(step, ReturnOrderReleased)
    assert work.node_id == "DC-LEEDS" and work.label is not None
    assert work.label.from_address == ORDER.ship_to
    assert work.label.to_address == NET.nodes["DC-LEEDS"].location
    assert work.label.carrier.service_id == "ground", "the cheapest service of a level a return may use"
    # Where both stock it, or when the policy does not care, the nearer wins.
    both = frozenset({("DC-LEEDS", "SKU-KETTLE"), ("DC-LONDON", "SKU-KETTLE")})
    assert start(request, stocked=both).case.node_id == "DC-LONDON"
    anywhere = policy(prefer_nodes_stocking_the_sku=False)
    assert (
        start(request, stocked=frozenset({("DC-LEEDS", "SKU-KETTLE")}), rules=anywhere).case.node_id
        == "DC-LONDON"
    )


def test_parcels_never_go_to_closed_nodes_stores_or_nodes_that_cannot_handle_the_goods() -> None:
    hazmat = order(("SKU-BATTERY", 2, "30.00"), labels={"SKU-BATTERY": (ProductLabel.HAZMAT,)})
    net = network(
        node("DC-LONDON", LONDON, NodeKind.DC, up=False),
        node("STORE-READING", READING, NodeKind.STORE, NodeCapability.HAZMAT),
        node("DC-BHAM", BIRMINGHAM),
        node("DC-LEEDS", LEEDS, NodeKind.DC, NodeCapability.HAZMAT),
    )
    step = start(authorised(("1", "SKU-BATTERY", 2)), the_order=hazmat, net=net)
    assert step.case.node_id == "DC-LEEDS"
    [work] = of(step, ReturnOrderReleased)
    assert work.lines[0].labels == (ProductLabel.HAZMAT,)
    assert work.label is not None and work.label.carrier.service_id == "ground", "the hazmat-allowed service"

    nowhere = network(node("DC-BHAM", BIRMINGHAM))
    stuck = start(authorised(("1", "SKU-BATTERY", 2)), the_order=hazmat, net=nowhere)
    assert states(stuck) == ["authorised", "needs_attention"]
    assert of(stuck, ReturnStatusChanged)[-1].reasons[0].code == "no_return_node"
    assert of(stuck, ReturnOrderReleased) == []


def test_a_return_brought_in_person_goes_to_the_customers_store_or_the_nearest() -> None:
    named = start(authorised(method=ReturnMethod.IN_STORE, store_id="STORE-BHAM"))
    [work] = of(named, ReturnOrderReleased)
    assert (work.node_id, work.method, work.label) == ("STORE-BHAM", ReturnMethod.IN_STORE, None)
    nearest = start(authorised(method=ReturnMethod.IN_STORE))
    assert nearest.case.node_id == "STORE-READING", "the nearest store to a London customer"
    unknown = start(authorised(method=ReturnMethod.IN_STORE, store_id="STORE-MARS"))
    assert of(unknown, ReturnStatusChanged)[-1].reasons[0].code == "unknown_return_store"
    a_dc = start(authorised(method=ReturnMethod.IN_STORE, store_id="DC-LEEDS"))
    assert of(a_dc, ReturnStatusChanged)[-1].reasons[0].code == "store_cannot_take_returns"


def test_below_the_threshold_the_customer_keeps_the_goods_and_is_refunded_at_once() -> None:
    mug = authorised(("2", "SKU-MUG", 1))  # 6.00, below the 10.00 of the packaged policy
    step = start(mug)
    assert states(step) == ["authorised", "refunded", "completed"]
    assert of(step, ReturnOrderReleased) == []
    refunded = of(step, ReturnStatusChanged)[1]
    assert (refunded.amount, refunded.currency, refunded.node_id) == (Decimal("6.00"), "GBP", None)
    credit = start(authorised(("2", "SKU-MUG", 1), resolution=ReturnResolution.STORE_CREDIT))
    assert states(credit) == ["authorised", "credited", "completed"]
    # An exchange always brings the goods back; two mugs (12.00) are worth collecting; 0 switches it off.
    assert (
        start(authorised(("2", "SKU-MUG", 1), resolution=ReturnResolution.EXCHANGE)).case.node_id is not None
    )
    assert start(authorised(("2", "SKU-MUG", 2))).case.node_id is not None
    never = policy(
        refund_without_return=policy().refund_without_return.model_copy(update={"below": Decimal(0)})
    )
    assert start(mug, rules=never).case.node_id is not None


# ---------------------------------------------------------------------------
# Refund and store credit
# ---------------------------------------------------------------------------


def test_a_refund_is_due_on_receipt_and_restockable_units_go_back_into_stock() -> None:
    step = start(authorised(("1", "SKU-KETTLE", 1), ("2", "SKU-MUG", 4)))
    assert states(step) == ["authorised", "awaiting_return"]
    [work] = of(step, ReturnOrderReleased)
    assert work.return_order_id == "RO-RMA-1"
    assert of(step, RedecideRequested) == [] and of(step, InventoryDelta) == []

    got = receive(
        step.case,
        received(step.case, ("1", "SKU-KETTLE", 1), ("2", "SKU-MUG", 4)),
        order=ORDER,
        policy=policy(),
        now=NOW,
    )
    assert states(got) == ["received", "refunded"]
    assert of(got, ReturnStatusChanged)[-1].amount == Decimal("73.99")

    done = inspect(
        got.case,
        inspected(got.case, ("1", "SKU-KETTLE", 1, 0), ("2", "SKU-MUG", 3, 1)),
        order=ORDER,
        policy=policy(),
        now=NOW,
    )
    assert states(done) == ["inspected", "completed"]
    deltas = of(done, InventoryDelta)
    assert [(d.node_id, d.sku, d.change, d.reason, d.reference) for d in deltas] == [
        ("DC-LONDON", "SKU-KETTLE", 1, DeltaReason.RETURN, "RO-RMA-1"),
        ("DC-LONDON", "SKU-MUG", 3, DeltaReason.RETURN, "RO-RMA-1"),
    ], "only restockable units go back into the ledger"
    last = of(done, ReturnStatusChanged)[-1]
    assert last.restocked == (
        SkuLine(line_id="1", sku="SKU-KETTLE", quantity=1),
        SkuLine(line_id="2", sku="SKU-MUG", quantity=3),
    )
    assert last.not_restocked == (SkuLine(line_id="2", sku="SKU-MUG", quantity=1),)
    sequence = [e.sequence for s in (step, got, done) for e in of(s, ReturnStatusChanged)]
    assert sequence == list(range(1, 7)), "numbered 1, 2, 3... per return, no gaps"


def test_nothing_restockable_puts_nothing_back_into_stock() -> None:
    step = start(authorised(resolution=ReturnResolution.STORE_CREDIT))
    got = receive(step.case, received(step.case), order=ORDER, policy=policy(), now=NOW)
    assert states(got) == ["received", "credited"]
    done = inspect(
        got.case, inspected(got.case, ("1", "SKU-KETTLE", 0, 1)), order=ORDER, policy=policy(), now=NOW
    )
    assert of(done, InventoryDelta) == []
    assert states(done) == ["inspected", "completed"]
    assert "not fit to sell again: SKU-KETTLE x1" in of(done, ReturnStatusChanged)[0].reasons[0].message


def test_a_short_receipt_refunds_what_came_back() -> None:
    step = start(authorised(("2", "SKU-MUG", 4)))
    got = receive(step.case, received(step.case, ("2", "SKU-MUG", 2)), order=ORDER, policy=policy(), now=NOW)
    rec, refunded = of(got, ReturnStatusChanged)
    assert rec.reasons[-1].code == "received_short"
    assert refunded.amount == Decimal("12.00")


def test_inspection_before_receipt_implies_the_receipt_and_a_late_receipt_changes_nothing() -> None:
    step = start(authorised())
    done = inspect(
        step.case, inspected(step.case, ("1", "SKU-KETTLE", 1, 0)), order=ORDER, policy=policy(), now=NOW
    )
    assert states(done) == ["received", "refunded", "inspected", "completed"]
    late = receive(done.case, received(done.case), order=ORDER, policy=policy(), now=NOW)
    assert late.events == () and late.note is not None
    again = inspect(done.case, inspected(done.case), order=ORDER, policy=policy(), now=NOW)
    assert again.events == (), "a second inspection restocks nothing twice"


# ---------------------------------------------------------------------------
# Exchanges
# ---------------------------------------------------------------------------


def test_an_exchange_after_receipt_ships_the_replacement_through_the_order_path_once_the_goods_are_back() -> (
    None
):
    step = start(authorised(resolution=ReturnResolution.EXCHANGE, reason=ReturnReason.SIZE_OR_FIT))
    assert states(step) == ["authorised", "awaiting_return"]
    assert of(step, RedecideRequested) == [], "policy: after receipt for a change of size"
    got = receive(step.case, received(step.case), order=ORDER, policy=policy(), now=NOW)
    assert states(got) == ["received"]
    [request] = of(got, RedecideRequested)
    assert request.repair is not None and request.repair.action == "exchange"
    assert request.repair.exception_id == replacement_exception_id("RMA-1", 1)
    assert [(x.line_id, x.sku, x.quantity) for x in request.order.lines] == [("RMA-1.1", "SKU-KETTLE", 1)]
    assert request.order.promised_delivery_date == NOW.date() + timedelta(days=5)
    # decide-node's repair path plans exactly the replacement line.
    part = repair_order(request.order, request.repair)
    assert [(x.line_id, x.sku, x.quantity) for x in part.lines] == [("RMA-1.1", "SKU-KETTLE", 1)]

    out = replacement_outcome(got.case, released_ok(got), 1, now=NOW)
    assert states(out) == ["exchanged"]
    assert of(out, ReturnStatusChanged)[0].replacement_work_order_ids == ("WO-R1",)
    done = inspect(out.case, inspected(out.case), order=ORDER, policy=policy(), now=NOW)
    assert states(done) == ["inspected", "completed"]
    assert all(e.amount is None for s in (step, got, out, done) for e in of(s, ReturnStatusChanged)), (
        "no money"
    )


def test_an_exchange_at_once_ships_the_replacement_with_the_authorisation() -> None:
    step = start(authorised(resolution=ReturnResolution.EXCHANGE, reason=ReturnReason.DAMAGED))
    assert states(step) == ["authorised", "awaiting_return"]
    assert len(of(step, RedecideRequested)) == 1
    out = replacement_outcome(step.case, released_ok(step), 1, now=NOW)
    assert states(out) == ["exchanged"]
    got = receive(out.case, received(out.case), order=ORDER, policy=policy(), now=NOW)
    assert states(got) == ["received"] and of(got, RedecideRequested) == [], "one replacement, not two"
    done = inspect(got.case, inspected(got.case), order=ORDER, policy=policy(), now=NOW)
    assert states(done) == ["inspected", "completed"]


def test_an_exchange_for_another_sku_sends_that_sku() -> None:
    swap = Replacement(line_id="1", sku="SKU-KETTLE-RED", quantity=1, unit_price=Decimal("54.99"))
    step = start(
        authorised(resolution=ReturnResolution.EXCHANGE, reason=ReturnReason.DEFECTIVE, replacements=(swap,))
    )
    [request] = of(step, RedecideRequested)
    [line] = request.order.lines
    assert (line.sku, line.quantity, line.unit_price) == ("SKU-KETTLE-RED", 1, Decimal("54.99"))


def test_a_replacement_nobody_can_ship_needs_attention() -> None:
    step = start(authorised(resolution=ReturnResolution.EXCHANGE, reason=ReturnReason.DAMAGED))
    failed = RepairOutcome(
        order_id="ORD-1",
        exception_id=replacement_exception_id("RMA-1", 1),
        action="exchange",
        succeeded=False,
        detail="no node can take the quantities now (backorder)",
    )
    out = replacement_outcome(step.case, failed, 1, now=NOW)
    assert states(out) == ["needs_attention"]
    assert "cannot ship" in of(out, ReturnStatusChanged)[0].reasons[0].message
    # ...and the OMS can settle it another way: credit once the goods are back.
    to_credit = change_resolution(
        out.case,
        changed(ReturnResolution.STORE_CREDIT),
        order=ORDER,
        route=reroute(out),
        policy=policy(),
        now=NOW,
    )
    got = receive(to_credit.case, received(to_credit.case), order=ORDER, policy=policy(), now=NOW)
    assert states(got) == ["received", "credited"]
    # Left as it is, the goods still come back; once inspected, it needs a person again: nothing
    # more comes on its own (the fault run found returns resting at "inspected" for good).
    back = receive(out.case, received(out.case), order=ORDER, policy=policy(), now=NOW)
    assert states(back) == ["received"]
    done = inspect(back.case, inspected(back.case), order=ORDER, policy=policy(), now=NOW)
    assert states(done) == ["inspected", "needs_attention"]
    assert "replacement cannot ship" in of(done, ReturnStatusChanged)[-1].reasons[0].message


def test_stale_and_foreign_outcomes_change_nothing() -> None:
    step = start(authorised(resolution=ReturnResolution.EXCHANGE, reason=ReturnReason.DAMAGED))
    outcome = released_ok(step)
    assert replacement_outcome(step.case, outcome, 7, now=NOW).events == ()
    assert parse_replacement_id("ORD-1-short_pick-3") is None
    assert parse_replacement_id("return:RMA:7:2") == ("RMA:7", 2)


# ---------------------------------------------------------------------------
# Changing the resolution mid-way
# ---------------------------------------------------------------------------


def test_return_and_replace_becomes_return_for_credit_before_the_replacement_is_sent() -> None:
    step = start(authorised(resolution=ReturnResolution.EXCHANGE, reason=ReturnReason.SIZE_OR_FIT))
    change = change_resolution(
        step.case,
        changed(ReturnResolution.STORE_CREDIT),
        order=ORDER,
        route=reroute(step),
        policy=policy(),
        now=NOW,
    )
    [status] = of(change, ReturnStatusChanged)
    assert (status.state, status.resolution) == (ReturnState.AWAITING_RETURN, ReturnResolution.STORE_CREDIT)
    assert status.reasons[0].code == "resolution_changed"
    assert "not sent" in status.reasons[0].message
    assert of(change, ReturnOrderCancelRequested) == [], "the goods still come back"
    got = receive(change.case, received(change.case), order=ORDER, policy=policy(), now=NOW)
    assert states(got) == ["received", "credited"]
    assert of(got, RedecideRequested) == [], "the replacement that no longer applies is never sent"


def test_return_for_credit_becomes_return_and_replace_and_back() -> None:
    step = start(authorised(resolution=ReturnResolution.STORE_CREDIT, reason=ReturnReason.DAMAGED))
    to_exchange = change_resolution(
        step.case,
        changed(ReturnResolution.EXCHANGE),
        order=ORDER,
        route=reroute(step, ReturnResolution.EXCHANGE),
        policy=policy(),
        now=NOW,
    )
    assert len(of(to_exchange, RedecideRequested)) == 1, "damaged: the replacement ships at once"
    back = change_resolution(
        to_exchange.case,
        changed(ReturnResolution.STORE_CREDIT),
        order=ORDER,
        route=reroute(step, ReturnResolution.STORE_CREDIT),
        policy=policy(),
        now=NOW,
    )
    assert "withdrawn" in of(back, ReturnStatusChanged)[0].reasons[0].message
    # The withdrawn replacement was released before the change reached the order path: a person decides.
    late = replacement_outcome(back.case, released_ok(to_exchange), attempt_of(to_exchange), now=NOW)
    assert states(late) == ["needs_attention"]
    assert of(late, ReturnStatusChanged)[0].reasons[0].code == "replacement_released_after_change"


def test_a_change_to_a_refund_below_the_threshold_cancels_the_return_work_order() -> None:
    mug = start(
        authorised(("2", "SKU-MUG", 1), resolution=ReturnResolution.EXCHANGE, reason=ReturnReason.SIZE_OR_FIT)
    )
    assert mug.case.return_order_id == "RO-RMA-1"
    change = change_resolution(
        mug.case, changed(ReturnResolution.REFUND), order=ORDER, route=reroute(mug), policy=policy(), now=NOW
    )
    [cancel_request] = of(change, ReturnOrderCancelRequested)
    assert (cancel_request.return_order_id, cancel_request.reason) == ("RO-RMA-1", "resolution_changed")
    assert states(change) == ["awaiting_return", "refunded", "completed"]
    assert of(change, ReturnStatusChanged)[1].amount == Decimal("6.00")


def test_a_change_after_the_replacement_was_released_or_the_money_is_due_is_refused() -> None:
    step = start(authorised(resolution=ReturnResolution.EXCHANGE, reason=ReturnReason.DAMAGED))
    out = replacement_outcome(step.case, released_ok(step), 1, now=NOW)
    refused = change_resolution(
        out.case, changed(ReturnResolution.REFUND), order=ORDER, route=reroute(out), policy=policy(), now=NOW
    )
    [status] = of(refused, ReturnStatusChanged)
    assert (status.state, status.reasons[0].code) == (
        ReturnState.NEEDS_ATTENTION,
        "replacement_already_released",
    )
    assert refused.case.resolution is ReturnResolution.EXCHANGE

    refund = start(authorised())
    got = receive(refund.case, received(refund.case), order=ORDER, policy=policy(), now=NOW)
    refused = change_resolution(
        got.case,
        changed(ReturnResolution.EXCHANGE),
        order=ORDER,
        route=reroute(got, ReturnResolution.EXCHANGE),
        policy=policy(),
        now=NOW,
    )
    assert of(refused, ReturnStatusChanged)[0].reasons[0].code == "already_settled"
    assert of(refused, RedecideRequested) == []


def test_the_same_resolution_again_changes_nothing_and_an_ended_return_refuses_changes() -> None:
    step = start(authorised())
    same = change_resolution(
        step.case,
        changed(ReturnResolution.REFUND),
        order=ORDER,
        route=reroute(step),
        policy=policy(),
        now=NOW,
    )
    assert same.events == ()
    done = start(authorised(("2", "SKU-MUG", 1)))
    with pytest.raises(ReturnRefused, match="completed"):
        change_resolution(
            done.case,
            changed(ReturnResolution.STORE_CREDIT),
            order=ORDER,
            route=reroute(done),
            policy=policy(),
            now=NOW,
        )


# ---------------------------------------------------------------------------
# Cancellation, and goods that come anyway
# ---------------------------------------------------------------------------


def test_a_cancelled_return_stops_its_work_order_and_still_restocks_goods_that_come_anyway() -> None:
    step = start(authorised(resolution=ReturnResolution.EXCHANGE, reason=ReturnReason.SIZE_OR_FIT))
    stopped = cancel(
        step.case,
        ReturnCancelled(return_id="RMA-1", order_id="ORD-1", reason="customer kept it", cancelled_at=NOW),
        now=NOW,
    )
    [request] = of(stopped, ReturnOrderCancelRequested)
    assert request.reason == "return_cancelled"
    assert states(stopped) == ["cancelled"]
    got = receive(stopped.case, received(stopped.case), order=ORDER, policy=policy(), now=NOW)
    done = inspect(got.case, inspected(got.case), order=ORDER, policy=policy(), now=NOW)
    assert states(got) == [] and states(done) == [], "nothing is published after the return ended"
    assert len(of(done, InventoryDelta)) == 1, "the ledger follows what is physically at the node"
    assert of(got, RedecideRequested) == []
    with pytest.raises(ReturnRefused, match="cancelled"):
        cancel(
            stopped.case,
            ReturnCancelled(return_id="RMA-1", order_id="ORD-1", reason="again", cancelled_at=NOW),
            now=NOW,
        )


# ---------------------------------------------------------------------------
# What is refused (dead-lettered with the reason)
# ---------------------------------------------------------------------------


def test_returns_the_order_could_not_have_sent_are_refused() -> None:
    with pytest.raises(ReturnRefused, match="no line 9"):
        returned_lines(authorised(("9", "SKU-KETTLE", 1)), ORDER, {})
    with pytest.raises(ReturnRefused, match="is SKU-KETTLE, not SKU-MUG"):
        returned_lines(authorised(("1", "SKU-MUG", 1)), ORDER, {})
    with pytest.raises(ReturnRefused, match="the order has 4, 1 not already in another return"):
        returned_lines(authorised(("2", "SKU-MUG", 2)), ORDER, {"2": 3})
    first = start(authorised(("2", "SKU-MUG", 3)))
    cancelled = cancel(
        first.case,
        ReturnCancelled(return_id="RMA-1", order_id="ORD-1", reason="x", cancelled_at=NOW),
        now=NOW,
    )
    assert units_in_live_returns([first.case]) == {"2": 3}
    assert units_in_live_returns([cancelled.case]) == {}, "a cancelled return frees its units"


def test_node_events_that_contradict_the_return_are_refused() -> None:
    step = start(authorised())
    with pytest.raises(ReturnRefused, match="authorised 1"):
        receive(step.case, received(step.case, ("1", "SKU-KETTLE", 2)), order=ORDER, policy=policy(), now=NOW)
    with pytest.raises(ReturnRefused, match="does not include"):
        receive(step.case, received(step.case, ("2", "SKU-MUG", 1)), order=ORDER, policy=policy(), now=NOW)
    wrong_order = received(step.case).model_copy(update={"return_order_id": "RO-OTHER"})
    with pytest.raises(ReturnRefused, match="no return work order RO-OTHER"):
        receive(step.case, wrong_order, order=ORDER, policy=policy(), now=NOW)
    mugs = start(authorised(("2", "SKU-MUG", 4)))
    got = receive(mugs.case, received(mugs.case, ("2", "SKU-MUG", 2)), order=ORDER, policy=policy(), now=NOW)
    with pytest.raises(ReturnRefused, match="more units than were received"):
        inspect(got.case, inspected(got.case, ("2", "SKU-MUG", 2, 1)), order=ORDER, policy=policy(), now=NOW)


def test_the_contract_refuses_inconsistent_returns() -> None:
    with pytest.raises(ValidationError, match="only for an exchange"):
        authorised(replacements=(Replacement(line_id="1", sku="SKU-KETTLE", quantity=1),))
    with pytest.raises(ValidationError, match="the return does not"):
        authorised(
            resolution=ReturnResolution.EXCHANGE,
            replacements=(Replacement(line_id="2", sku="SKU-MUG", quantity=1),),
        )
    with pytest.raises(ValidationError, match="only for an in_store return"):
        authorised(store_id="STORE-BHAM")
    with pytest.raises(ValidationError, match="at least one unit"):
        InspectedLine(line_id="1", sku="X", restockable=0, not_restockable=0)


def test_every_return_event_reads_as_a_sentence_on_the_timeline() -> None:
    for event_type in sorted(t for t in EVENT_TYPES if t.startswith(("return", "returnorder"))):
        text = describe(example(event_type))
        assert "RMA-5521" in text or "RO-RMA-5521" in text, (event_type, text)
    assert describe(example("return.status_changed.v1")).startswith("return RMA-5521 credited 49.99 GBP")


# ---------------------------------------------------------------------------
# Properties: whatever the OMS and the nodes say, in whatever order
# ---------------------------------------------------------------------------

_ACTIONS = st.lists(
    st.sampled_from(
        [
            "receive",
            "receive_short",
            "inspect",
            "inspect_broken",
            "to_refund",
            "to_credit",
            "to_exchange",
            "to_exchange_other",
            "cancel",
            "replacement_ok",
            "replacement_failed",
        ]
    ),
    max_size=10,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    resolution=st.sampled_from(list(ReturnResolution)),
    reason=st.sampled_from([ReturnReason.DAMAGED, ReturnReason.SIZE_OR_FIT]),
    mugs=st.integers(min_value=1, max_value=4),
    actions=_ACTIONS,
)
def test_a_return_stays_consistent_whatever_happens(
    resolution: ReturnResolution, reason: ReturnReason, mugs: int, actions: list[str]
) -> None:
    rules = policy()
    step = start(authorised(("2", "SKU-MUG", mugs), resolution=resolution, reason=reason), rules=rules)
    steps = [step]
    case = step.case
    for action in actions:
        try:
            if action in ("receive", "receive_short"):
                units = mugs if action == "receive" else max(1, mugs - 1)
                step = receive(
                    case, received(case, ("2", "SKU-MUG", units)), order=ORDER, policy=rules, now=NOW
                )
            elif action in ("inspect", "inspect_broken"):
                have = {x.line_id: x.quantity for x in case.received}.get("2", mugs)
                good = have if action == "inspect" else 0
                step = inspect(
                    case,
                    inspected(case, ("2", "SKU-MUG", good, have - good)),
                    order=ORDER,
                    policy=rules,
                    now=NOW,
                )
            elif action.startswith("to_"):
                new = {"to_refund": "refund", "to_credit": "store_credit"}.get(action, "exchange")
                swaps = (
                    (Replacement(line_id="2", sku="SKU-MUG-BLUE", quantity=mugs),)
                    if action.endswith("other")
                    else ()
                )
                change = changed(ReturnResolution(new), *swaps)
                where = route_return(
                    lines=case.lines,
                    resolution=change.resolution,
                    method=case.method,
                    store_id=None,
                    origin=ORDER.ship_to,
                    network=NET,
                    stocked=frozenset(),
                    policy=rules,
                    now=NOW,
                )
                step = change_resolution(case, change, order=ORDER, route=where, policy=rules, now=NOW)
            elif action == "cancel":
                event = ReturnCancelled(return_id="RMA-1", order_id="ORD-1", reason="x", cancelled_at=NOW)
                step = cancel(case, event, now=NOW)
            else:
                ok = action == "replacement_ok"
                outcome = RepairOutcome(
                    order_id="ORD-1",
                    exception_id=replacement_exception_id("RMA-1", case.replacement_attempt),
                    action="exchange",
                    succeeded=ok,
                    detail="WO-X released" if ok else "no stock",
                    work_order_ids=("WO-X",) if ok else (),
                )
                step = replacement_outcome(case, outcome, case.replacement_attempt, now=NOW)
        except ReturnRefused:
            continue  # dead-lettered; the case is unchanged
        steps.append(step)
        case = step.case

    statuses = [e for s in steps for e in of(s, ReturnStatusChanged)]
    # Numbered 1, 2, 3... with no gaps, each naming the state before it.
    assert [e.sequence for e in statuses] == list(range(1, len(statuses) + 1))
    for before, after in pairwise(statuses):
        assert after.previous_state == before.state
        assert before.state not in (ReturnState.COMPLETED, ReturnState.CANCELLED), "nothing after the end"
    # The customer is never settled twice: at most one refund or credit, and never money and a replacement.
    money = [e for e in statuses if e.state in (ReturnState.REFUNDED, ReturnState.CREDITED)]
    assert len(money) <= 1
    exchanged = [e for e in statuses if e.state is ReturnState.EXCHANGED]
    assert not (money and exchanged)
    assert all(e.amount is not None and e.amount <= Decimal("6.00") * mugs for e in money)
    # Never more units back into stock than came back, and only from an inspection.
    restocked = sum(d.change for s in steps for d in of(s, InventoryDelta))
    assert 0 <= restocked <= mugs
    # Every cancel request names a return work order that was released, once.
    released = Counter(e.return_order_id for s in steps for e in of(s, ReturnOrderReleased))
    cancelled = Counter(e.return_order_id for s in steps for e in of(s, ReturnOrderCancelRequested))
    assert all(released[k] == 1 for k in released)
    assert all(k in released and n == 1 for k, n in cancelled.items())
    # Each replacement request is a new attempt.
    attempts = [r.repair.exception_id for s in steps for r in of(s, RedecideRequested) if r.repair]
    assert len(attempts) == len(set(attempts))


def test_a_line_an_amendment_removed_after_it_shipped_can_come_back_at_the_units_that_shipped() -> None:
    """The node shipped the mugs before the amendment removing them reached it: the customer has
    them, so a return of them is checked against what shipped, at the line's price."""
    amended = order(("SKU-KETTLE", 1, "49.99"))
    mugs = ORDER.lines[1]
    returnable = with_shipped_removed_lines(amended, [mugs], {"2": 3})
    assert [(x.line_id, x.sku, x.quantity, x.unit_price) for x in returnable.lines] == [
        ("1", "SKU-KETTLE", 1, Decimal("49.99")),
        ("2", "SKU-MUG", 3, Decimal("6.00")),
    ]
    assert with_shipped_removed_lines(amended, [mugs], {"1": 1}) is amended, "the mugs never shipped"
    request = ReturnAuthorised(
        return_id="RMA-1",
        order_id="ORD-1",
        lines=(ReturnLine(line_id="2", sku="SKU-MUG", quantity=4),),
        reason=ReturnReason.CHANGED_MIND,
        resolution=ReturnResolution.REFUND,
        authorised_at=NOW,
    )
    with pytest.raises(ReturnRefused, match="the order has 3"):
        returned_lines(request, returnable, {})
