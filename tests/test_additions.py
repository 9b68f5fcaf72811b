"""Automatic additions (pure): which lines the policy adds to an order, and where they ship.

The rules come from the packaged policy where it has them (a free sample for
gold and platinum customers, a safety data sheet with hazardous goods,
a protective sleeve per fragile unit, gift wrap for large web orders), so
these tests also say what an operator gets out of the box. Placement is
checked on plans made by the real decision engine, and by a property over
random plans and stock.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.contract.common import (
    CarrierAssignment,
    Channel,
    CustomerTier,
    HomeDelivery,
    NodeCapability,
    NodeKind,
    OrderLine,
    PolicyAddition,
    ProductLabel,
    ServiceLevel,
    SkuLine,
    StorePickup,
)
from orchestrator.contract.orders import OrderCreated
from orchestrator.contract.pipeline import PlanDecided, PlannedShipment, PlanOutcome
from orchestrator.domain.additions import (
    AddedItem,
    AdditionConditions,
    AdditionRule,
    Per,
    add_lines,
    customer_order,
    place_additions,
    placed_additions,
)
from orchestrator.domain.explain import explain_plan
from orchestrator.domain.network import network_from_events
from orchestrator.domain.policy import POLICY_FILE_ENV, Policy, PolicyError, load_policy
from orchestrator.domain.sourcing import TIMES, decide
from orchestrator.domain.timeline import describe
from orchestrator.domain.validation import validate_order
from tests.harness import CARRIERS, LEEDS, LONDON, MANCHESTER, address, node

NOW = datetime(2025, 3, 10, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _no_policy_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(POLICY_FILE_ENV, raising=False)


@pytest.fixture(scope="module")
def rules() -> tuple[AdditionRule, ...]:
    return load_policy().additions


def line(line_id: str, sku: str, quantity: int = 1, *labels: ProductLabel, price: str = "10") -> OrderLine:
    return OrderLine(line_id=line_id, sku=sku, quantity=quantity, unit_price=Decimal(price), labels=labels)


def an_order(
    *lines: OrderLine,
    tier: CustomerTier = CustomerTier.STANDARD,
    channel: Channel = Channel.WEB,
    total: str | None = None,
    delivery: Any = None,
) -> OrderCreated:
    goods = sum((ln.unit_price * ln.quantity for ln in lines), Decimal(0))
    return OrderCreated(
        order_id="ORD-1",
        channel=channel,
        customer_id="C-1",
        customer_tier=tier,
        placed_at=NOW,
        ship_to=address(LONDON),
        lines=lines or (line("1", "SKU-KETTLE"),),
        order_total=Decimal(total) if total is not None else goods + Decimal("4.99"),
        currency="GBP",
        delivery=delivery or HomeDelivery(kind="standard"),
        promised_delivery_date=date(2025, 3, 14),
    )


def rule(name: str, sku: str, *, per: Per = Per.ORDER, quantity: int = 1, **when: Any) -> AdditionRule:
    return AdditionRule(
        name=name,
        reason=f"Because of {name}.",
        when=AdditionConditions(**when),
        add=AddedItem(sku=sku, quantity=quantity, per=per),
    )


# ---------------------------------------------------------------------------
# What is added (validate)
# ---------------------------------------------------------------------------


def test_a_gold_customer_gets_the_free_sample_once_for_the_order(rules: tuple[AdditionRule, ...]) -> None:
    order = an_order(line("1", "SKU-KETTLE", 2), line("2", "SKU-MUG", 3), tier=CustomerTier.GOLD)
    result = add_lines(order, rules)
    [sample] = result.added
    assert (sample.line_id, sample.sku, sample.quantity, sample.unit_price) == (
        "add-free-sample",
        "SKU-SAMPLE-BOX",
        1,
        Decimal(0),
    )
    assert sample.addition == PolicyAddition(
        rule="free-sample", reason="Gold and platinum customers get a free sample with their order."
    )
    assert [ln.line_id for ln in result.order.lines] == ["1", "2", "add-free-sample"]
    assert result.summary() == (
        "policy added add-free-sample (SKU-SAMPLE-BOX x1): "
        "Gold and platinum customers get a free sample with their order."
    )


def test_an_order_that_meets_no_rule_is_left_as_it_is(rules: tuple[AdditionRule, ...]) -> None:
    order = an_order(line("1", "SKU-KETTLE", 2), tier=CustomerTier.SILVER)
    result = add_lines(order, rules)
    assert result.added == () and result.summary() is None
    assert result.order == order


def test_fragile_lines_get_a_sleeve_per_unit_and_ship_with_them(rules: tuple[AdditionRule, ...]) -> None:
    order = an_order(
        line("1", "SKU-VASE", 2, ProductLabel.FRAGILE),
        line("2", "SKU-MUG"),
        line("3", "SKU-GLASS", 3, ProductLabel.FRAGILE, ProductLabel.HIGH_VALUE),
    )
    [sleeves] = add_lines(order, rules).added
    assert (sleeves.sku, sleeves.quantity) == ("SKU-PACK-SLEEVE", 5)
    assert sleeves.addition is not None and sleeves.addition.for_lines == ("1", "3")


def test_hazardous_lines_get_one_safety_sheet_whatever_their_units(rules: tuple[AdditionRule, ...]) -> None:
    order = an_order(line("1", "SKU-SOLVENT", 4, ProductLabel.HAZMAT), line("2", "SKU-MUG"))
    [sheet] = add_lines(order, rules).added
    assert (sheet.line_id, sheet.quantity) == ("add-hazmat-safety-sheet", 1)
    assert sheet.addition is not None and sheet.addition.for_lines == ("1",)


def test_gift_wrap_from_the_threshold_up_and_only_on_its_channels(rules: tuple[AdditionRule, ...]) -> None:
    def wrapped(total: str, channel: Channel = Channel.WEB) -> bool:
        added = add_lines(an_order(line("1", "SKU-TV", 1, price="200"), total=total, channel=channel), rules)
        return any(ln.sku == "SKU-GIFT-WRAP" for ln in added.added)

    assert wrapped("250.00")
    assert not wrapped("249.99")
    assert not wrapped("900.00", Channel.MARKETPLACE)


def test_rules_add_in_policy_order_and_every_condition_must_hold() -> None:
    rules = (
        rule("express-leaflet", "SKU-LEAFLET", delivery_methods=("express",)),
        rule("kettle-descaler", "SKU-DESCALER", per=Per.UNIT, quantity=2, skus=("SKU-KETTLE",)),
        rule("bopis-bag", "SKU-BAG", delivery_methods=("bopis",)),
        rule("app-gold", "SKU-PIN", channels=("app",), customer_tiers=("gold",)),
    )
    order = an_order(
        line("1", "SKU-KETTLE", 3),
        line("2", "SKU-MUG"),
        channel=Channel.APP,
        delivery=HomeDelivery(kind="express"),
    )
    added = add_lines(order, rules).added
    assert [(ln.line_id, ln.quantity) for ln in added] == [
        ("add-express-leaflet", 1),
        ("add-kettle-descaler", 6),
    ]
    pickup = order.model_copy(
        update={
            "delivery": StorePickup(kind="bopis", pickup_store_id="STORE-1"),
            "customer_tier": CustomerTier.GOLD,
        }
    )
    assert [ln.line_id for ln in add_lines(pickup, rules).added] == [
        "add-kettle-descaler",
        "add-bopis-bag",
        "add-app-gold",
    ]


def test_adding_again_replaces_the_additions_instead_of_doubling_them(
    rules: tuple[AdditionRule, ...],
) -> None:
    order = an_order(line("1", "SKU-VASE", 2, ProductLabel.FRAGILE), tier=CustomerTier.PLATINUM)
    once = add_lines(order, rules).order
    assert add_lines(once, rules).order == once
    # An amendment (ingest's order, without additions) gets the additions worked out afresh.
    amended = order.model_copy(update={"lines": (line("1", "SKU-VASE", 5, ProductLabel.FRAGILE),)})
    again = add_lines(amended, rules).order
    assert [(ln.line_id, ln.quantity) for ln in again.lines] == [
        ("1", 5),
        ("add-free-sample", 1),
        ("add-fragile-packaging", 5),
    ]
    assert customer_order(again) == amended
    # A repair of an added line alone has no customer's line to ride along with.
    alone = again.model_copy(update={"lines": again.lines[1:]})
    with pytest.raises(
        ValueError, match="only policy additions are left to plan; they never ship on their own"
    ):
        customer_order(alone)


def test_a_line_of_the_customers_with_the_same_id_wins_and_the_rule_says_it_was_skipped(
    rules: tuple[AdditionRule, ...],
) -> None:
    order = an_order(line("add-free-sample", "SKU-KETTLE"), tier=CustomerTier.GOLD)
    result = add_lines(order, rules)
    assert result.added == () and result.order == order
    assert (
        result.summary() == "policy rule free-sample skipped: the order already has a line add-free-sample."
    )


def test_an_oms_order_that_carries_an_addition_is_rejected() -> None:
    marked = line("9", "SKU-SAMPLE-BOX").model_copy(
        update={"addition": PolicyAddition(rule="x", reason="Sneaky.")}
    )
    order = an_order(line("1", "SKU-KETTLE"), marked)
    verdict = validate_order(
        order,
        network=network_from_events(CARRIERS),
        known_skus={"SKU-KETTLE", "SKU-SAMPLE-BOX"},
        policy=load_policy(),
        now=NOW,
    )
    assert [r.code for r in verdict.reasons] == ["unexpected_addition"]


# ---------------------------------------------------------------------------
# The rules in the policy file
# ---------------------------------------------------------------------------


def write(tmp_path: Path, additions: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text("version: v1\nadditions:\n" + additions, encoding="utf-8")
    return path


def test_rules_load_from_yaml_with_their_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "  - name: insert\n    reason: Every parcel has our catalogue.\n    add: {sku: SKU-CAT}\n",
    )
    [only] = load_policy(path).additions
    assert only.when == AdditionConditions()
    assert (only.add.quantity, only.add.per, only.add.unit_price, only.line_id) == (
        1,
        Per.ORDER,
        0,
        "add-insert",
    )
    # No condition: every order gets it.
    assert [ln.line_id for ln in add_lines(an_order(), (only,)).added] == ["add-insert"]


@pytest.mark.parametrize(
    ("additions", "expected"),
    [
        (
            "  - {name: acid, reason: R., add: {sku: SKU-A, labels: [hazmat]}}\n",
            "additions.0.add.labels: Value error, an addition cannot be hazmat: it ships in a parcel",
        ),
        (
            "  - {name: twice, reason: R., add: {sku: SKU-A}}\n  - {name: twice, reason: S., add: {sku: SKU-B}}\n",
            "additions: Value error, rule names must not repeat: twice",
        ),
        (
            "  - {name: Free Sample, reason: R., add: {sku: SKU-A}}\n",
            "additions.0.name: String should match pattern",
        ),
        (
            "  - {name: a, reason: R., add: {sku: SKU-A, quantity: 0}}\n",
            "additions.0.add.quantity: Input should be greater than 0",
        ),
        (
            "  - {name: a, reason: R., add: {sku: SKU-A, per: parcel}}\n",
            "additions.0.add.per: Input should be 'order' or 'unit'",
        ),
        (
            "  - {name: a, reason: R., when: {tier: [gold]}, add: {sku: SKU-A}}\n",
            "additions.0.when.tier: Extra inputs are not permitted",
        ),
        (
            "  - {name: a, reason: R., when: {order_total_at_least: -1}, add: {sku: SKU-A}}\n",
            "additions.0.when.order_total_at_least: Input should be greater than or equal to 0",
        ),
        ("  - {name: a, add: {sku: SKU-A}}\n", "additions.0.reason: Field required"),
    ],
)
def test_bad_rules_are_explained_with_the_field(tmp_path: Path, additions: str, expected: str) -> None:
    path = write(tmp_path, additions)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(info.value).startswith(f"policy {path}: {expected}"), str(info.value)


# ---------------------------------------------------------------------------
# Where they ship (decide-node)
# ---------------------------------------------------------------------------

SOUTH, NORTH, VENDOR = "DC-SOUTH", "DC-NORTH", "VENDOR-1"
NETWORK = network_from_events(
    [
        *CARRIERS,
        node(SOUTH, LONDON),
        node(NORTH, MANCHESTER),
        node(VENDOR, LEEDS, NodeKind.DROP_SHIP_VENDOR),
        node("STORE-1", LEEDS, NodeKind.STORE, NodeCapability.BOPIS_PICKUP),
    ]
)
POLICY = Policy(
    version="t-1",
    additions=(
        rule("sample", "SKU-SAMPLE"),
        rule("sleeve", "SKU-SLEEVE", per=Per.UNIT, labels=("fragile",)),
    ),
)


def planned(order: OrderCreated, stock: dict[tuple[str, str], int]) -> tuple[PlanDecided, PlanDecided]:
    """The customer's plan as the engine makes it, and the same plan with the additions placed."""
    validated = add_lines(order, POLICY.additions).order
    plan = decide(
        customer_order(validated), network=NETWORK, stock=stock, capacity_used={}, policy=POLICY, now=NOW
    )
    return plan, place_additions(plan, validated, stock=stock, network=NETWORK)


def shipped(plan: PlanDecided) -> dict[str, list[tuple[str, int]]]:
    return {s.node_id: [(x.line_id, x.quantity) for x in s.lines] for s in plan.shipments}


def test_the_sample_rides_along_with_the_customers_shipment() -> None:
    order = an_order(line("1", "SKU-KETTLE"), tier=CustomerTier.GOLD)
    before, after = planned(order, {(SOUTH, "SKU-KETTLE"): 3, (SOUTH, "SKU-SAMPLE"): 10})
    assert shipped(after) == {SOUTH: [("1", 1), ("add-sample", 1)]}
    assert after.outcome is PlanOutcome.SHIP and after.total_cost == before.total_cost
    assert after.explanation[: len(before.explanation)] == before.explanation
    assert (
        after.explanation[-1]
        == f"Added line add-sample (SKU-SAMPLE {TIMES}1) ships from {SOUTH} in shipment 1 (policy rule sample: Because of sample.)"
    )
    assert placed_additions(after) == (SkuLine(line_id="add-sample", sku="SKU-SAMPLE", quantity=1),)
    assert f"lines: 1 SKU-KETTLE {TIMES}1, add-sample SKU-SAMPLE {TIMES}1" in explain_plan(after)


def test_an_addition_short_where_the_order_ships_is_left_out_not_split_off() -> None:
    order = an_order(line("1", "SKU-KETTLE"), tier=CustomerTier.GOLD)
    # The sample is only where the kettle is not: it would need a second parcel, so it stays out.
    stock = {(SOUTH, "SKU-KETTLE"): 3, (NORTH, "SKU-SAMPLE"): 10}
    before, after = planned(order, stock)
    assert shipped(after) == shipped(before) == {SOUTH: [("1", 1)]}
    assert after.backordered == () and after.outcome is PlanOutcome.SHIP
    assert after.explanation[-1] == (
        f"Added line add-sample (SKU-SAMPLE {TIMES}1) is left out: no node shipping the order ({SOUTH}) has 1 SKU-SAMPLE "
        "to spare; an addition never waits for stock or makes a shipment of its own (policy rule sample)."
    )
    assert [ln.line_id for ln in after.order.lines] == ["1", "add-sample"]
    assert describe(after).endswith("; additions left out: add-sample (SKU-SAMPLE x1)")


def test_a_sleeve_ships_with_the_fragile_line_and_the_sample_with_the_first_parcel_that_has_one() -> None:
    order = an_order(
        line("1", "SKU-KETTLE"), line("2", "SKU-VASE", 2, ProductLabel.FRAGILE), tier=CustomerTier.PLATINUM
    )
    stock = {
        (SOUTH, "SKU-KETTLE"): 5,
        (NORTH, "SKU-VASE"): 5,
        (SOUTH, "SKU-SLEEVE"): 50,
        (NORTH, "SKU-SLEEVE"): 50,
        (NORTH, "SKU-SAMPLE"): 50,
    }
    _, after = planned(order, stock)
    assert shipped(after) == {SOUTH: [("1", 1)], NORTH: [("2", 2), ("add-sample", 1), ("add-sleeve", 2)]}
    assert describe(after).endswith(
        "; additions shipping: add-sample (SKU-SAMPLE x1), add-sleeve (SKU-SLEEVE x2)"
    )


def test_a_sleeve_for_a_back_ordered_vase_waits_for_nothing_and_rides_on_nothing() -> None:
    order = an_order(line("1", "SKU-KETTLE"), line("2", "SKU-VASE", 1, ProductLabel.FRAGILE))
    _, after = planned(order, {(SOUTH, "SKU-KETTLE"): 5, (SOUTH, "SKU-SLEEVE"): 50})
    assert after.outcome is PlanOutcome.PARTIAL and shipped(after) == {SOUTH: [("1", 1)]}
    assert [b.line_id for b in after.backordered] == ["2"], "only the customer's vase waits"
    assert "is left out: line(s) 2, which it goes with, do not ship in this plan" in after.explanation[-1]


def test_an_addition_of_a_sku_the_customer_also_ordered_takes_only_what_is_left() -> None:
    order = an_order(line("1", "SKU-SAMPLE", 2), tier=CustomerTier.GOLD)
    _, short = planned(order, {(SOUTH, "SKU-SAMPLE"): 2})
    assert shipped(short) == {SOUTH: [("1", 2)]}, "the customer's two units come first"
    _, enough = planned(order, {(SOUTH, "SKU-SAMPLE"): 3})
    assert shipped(enough) == {SOUTH: [("1", 2), ("add-sample", 1)]}


def test_a_drop_ship_vendor_never_carries_an_addition() -> None:
    order = an_order(
        line("1", "SKU-DS").model_copy(update={"drop_ship_vendor_id": VENDOR}), tier=CustomerTier.GOLD
    )
    _, after = planned(order, {(VENDOR, "SKU-DS"): 5, (VENDOR, "SKU-SAMPLE"): 5})
    assert shipped(after) == {VENDOR: [("1", 1)]}
    assert "only drop-ship vendors ship the order" in after.explanation[-1]


def test_a_plan_that_ships_nothing_keeps_the_additions_on_the_order_for_later() -> None:
    order = an_order(line("1", "SKU-KETTLE"), tier=CustomerTier.GOLD).model_copy(
        update={"ship_complete": True}
    )
    before, after = planned(order, {(SOUTH, "SKU-SAMPLE"): 5})
    assert after.shipments == () and after.explanation == before.explanation
    assert [ln.line_id for ln in after.order.lines] == ["1", "add-sample"]
    assert [b.line_id for b in after.backordered] == ["1"], "an addition is never back-ordered"
    assert describe(after).endswith("; additions wait with the order: add-sample (SKU-SAMPLE x1)")


# ---------------------------------------------------------------------------
# Property: additions never change the customer's plan and never oversell
# ---------------------------------------------------------------------------

NODES = (SOUTH, NORTH, VENDOR)
ADDED_SKUS = ("SKU-SAMPLE", "SKU-SLEEVE", "SKU-A")


def _shipment(index: int, node_id: str, items: list[SkuLine]) -> PlannedShipment:
    return PlannedShipment(
        shipment_id=f"ORD-1-p1-s{index}-{node_id}",
        node_id=node_id,
        lines=tuple(items),
        carrier=CarrierAssignment(carrier="tcarrier", service_id="t-ground"),
        service_level=ServiceLevel.GROUND,
        ship_by=NOW + timedelta(hours=8),
        promised_delivery_date=date(2025, 3, 12),
        distance_km=10.0,
        shipping_cost=Decimal("4.00"),
        cost=4.5,
    )


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(1, 4))
    lines = [
        line(
            str(i),
            draw(st.sampled_from(("SKU-A", "SKU-B"))),
            draw(st.integers(1, 3)),
            *draw(st.sampled_from(((), (ProductLabel.FRAGILE,)))),
        )
        for i in range(1, count + 1)
    ]
    order = an_order(*lines, tier=draw(st.sampled_from(list(CustomerTier))))
    nodes = draw(st.lists(st.sampled_from(NODES), min_size=0, max_size=3, unique=True))
    by_node: dict[str, list[SkuLine]] = {n: [] for n in nodes}
    for ln in lines if nodes else []:
        by_node[draw(st.sampled_from(nodes))].append(
            SkuLine(line_id=ln.line_id, sku=ln.sku, quantity=ln.quantity)
        )
    shipments = tuple(_shipment(i, n, items) for i, (n, items) in enumerate(by_node.items(), 1) if items)
    rules = (
        rule("sample", "SKU-SAMPLE", customer_tiers=("gold", "platinum")),
        rule("sleeve", "SKU-SLEEVE", per=Per.UNIT, labels=("fragile",)),
        rule("more-a", "SKU-A", quantity=draw(st.integers(1, 3))),
    )
    stock = {
        (n, s): draw(st.integers(0, 6)) for n in NODES for s in ("SKU-A", "SKU-B", "SKU-SAMPLE", "SKU-SLEEVE")
    }
    return {"order": order, "shipments": shipments, "rules": rules, "stock": stock}


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_additions_ride_along_without_touching_the_customers_plan(scenario: dict[str, Any]) -> None:
    validated = add_lines(scenario["order"], scenario["rules"]).order
    plan = PlanDecided(
        order_id="ORD-1",
        plan_id="ORD-1-p1",
        plan_version=1,
        sequence=1,
        order=customer_order(validated),
        outcome=PlanOutcome.SHIP if scenario["shipments"] else PlanOutcome.BACKORDER,
        shipments=scenario["shipments"],
        total_cost=1.0,
        policy_version="t-1",
        explanation=("Headline.",),
        decided_at=NOW,
    )
    stock: dict[tuple[str, str], int] = scenario["stock"]
    after = place_additions(plan, validated, stock=stock, network=NETWORK)
    added = {ln.line_id: ln for ln in validated.lines if ln.addition is not None}
    # The customer's plan is as it was: same shipments, same nodes, same lines in the same order.
    assert [s.shipment_id for s in after.shipments] == [s.shipment_id for s in plan.shipments]
    for old, new in zip(plan.shipments, after.shipments, strict=True):
        assert new.lines[: len(old.lines)] == old.lines
        riding = new.lines[len(old.lines) :]
        assert all(x.line_id in added for x in riding)
        assert not riding or new.node_id != VENDOR
    # Each addition ships whole in one parcel, or is left out with a sentence (when anything ships).
    placed = Counter(x.line_id for x in placed_additions(after))
    assert all(n == 1 for n in placed.values())
    for line_id, ln in added.items():
        parts = [x for s in after.shipments for x in s.lines if x.line_id == line_id]
        assert not parts or parts[0].quantity == ln.quantity
        if plan.shipments:
            assert sum(f"Added line {line_id} " in sentence for sentence in after.explanation) == 1
        if parts and ln.addition is not None and ln.addition.for_lines:
            [carrier] = [s for s in after.shipments if parts[0] in s.lines]
            assert any(x.line_id in ln.addition.for_lines for x in carrier.lines), "it goes with its lines"
    # Never more out of a node than it has, counting the customer's lines of the same SKU.
    out: Counter[tuple[str, str]] = Counter()
    for s in after.shipments:
        for x in s.lines:
            out[(s.node_id, x.sku)] += x.quantity
    for key, units in out.items():
        before = sum(
            x.quantity for s in plan.shipments if s.node_id == key[0] for x in s.lines if x.sku == key[1]
        )
        assert units == before or units <= stock.get(key, 0)
    assert after.order == validated and after.backordered == plan.backordered
