"""The validate stage's pure core: every reason an order is rejected, and its holds."""

from __future__ import annotations

from datetime import UTC, datetime, time
from decimal import Decimal

import pytest

from orchestrator.contract.common import (
    Address,
    HoldReason,
    NodeCapability,
    NodeKind,
    OrderLine,
    OrderState,
    ShipToStore,
    StorePickup,
)
from orchestrator.contract.examples import example
from orchestrator.contract.network import NodeUpserted
from orchestrator.contract.orders import OrderCreated
from orchestrator.domain.network import network_from_events
from orchestrator.domain.policy import load_policy
from orchestrator.domain.validation import normalise_postal_code, postal_code_valid, validate_order
from orchestrator.stages.status_sync import is_transition

NOW = datetime(2025, 3, 10, 9, 0, tzinfo=UTC)
POLICY = load_policy()


def _store(node_id: str, *caps: NodeCapability) -> NodeUpserted:
    return NodeUpserted(
        node_id=node_id,
        kind=NodeKind.STORE,
        name=node_id,
        location=Address(
            line1="1 Briggate",
            city="Leeds",
            postal_code="LS1 6HB",
            country="GB",
            latitude=53.79,
            longitude=-1.54,
        ),
        capabilities=caps,
        daily_capacity=50,
        cutoff_local=time(16),
        timezone="Europe/London",
        open=True,
    )


NETWORK = network_from_events(
    [
        example("network.carrier_service_upserted.v1"),
        _store("STORE-PICKUP", NodeCapability.BOPIS_PICKUP, NodeCapability.SHIP_TO_STORE_RECEIVE),
        _store("STORE-PLAIN"),
    ]
)


def _order(**changes: object) -> OrderCreated:
    base = example("order.created.v1")
    assert isinstance(base, OrderCreated)
    return base.model_copy(update={"holds": (), **changes})


def _skus(order: OrderCreated) -> set[str]:
    return {line.sku for line in order.lines}


def _codes(order: OrderCreated, known: set[str] | None = None) -> list[str]:
    verdict = validate_order(
        order, network=NETWORK, known_skus=_skus(order) if known is None else known, policy=POLICY, now=NOW
    )
    return sorted(r.code for r in verdict.reasons)


def test_a_good_order_passes() -> None:
    order = _order(order_total=Decimal("500"))
    verdict = validate_order(order, network=NETWORK, known_skus=_skus(order), policy=POLICY, now=NOW)
    assert verdict.valid and verdict.holds == ()


def test_every_failure_is_reported_with_a_reason() -> None:
    base = _order()
    lines = (
        OrderLine(line_id="1", sku="SKU-A", quantity=0, unit_price=Decimal("5")),
        OrderLine(line_id="2", sku="SKU-UNKNOWN", quantity=-1, unit_price=Decimal("5")),
    )
    assert base.ship_to is not None
    bad = base.model_copy(
        update={
            "lines": lines,
            "order_total": Decimal("0"),
            "ship_to": base.ship_to.model_copy(update={"postal_code": "12345"}),
        }
    )
    verdict = validate_order(bad, network=NETWORK, known_skus={"SKU-A"}, policy=POLICY, now=NOW)
    assert sorted(r.code for r in verdict.reasons) == [
        "non_positive_quantity",
        "non_positive_quantity",
        "unknown_sku",
        "unroutable_postal_code",
    ]
    assert all("line" in r.message or "postal" in r.message for r in verdict.reasons)


def test_missing_address_and_price_mismatch() -> None:
    assert _codes(_order(ship_to=None)) == ["missing_address"]
    assert _codes(_order(order_total=Decimal("0.01"))) == ["price_mismatch"]


def test_a_country_no_carrier_serves_is_unroutable() -> None:
    order = _order()
    assert order.ship_to is not None
    abroad = order.model_copy(
        update={"ship_to": order.ship_to.model_copy(update={"country": "US", "postal_code": "10001"})}
    )
    assert _codes(abroad) == ["unroutable_postal_code"]


@pytest.mark.parametrize(
    ("delivery", "code"),
    [
        (StorePickup(kind="bopis", pickup_store_id="STORE-NOPE"), "unknown_pickup_store"),
        (StorePickup(kind="bopis", pickup_store_id="STORE-PLAIN"), "store_cannot_pickup"),
        (ShipToStore(kind="ship_to_store", store_id="STORE-PLAIN"), "store_cannot_receive"),
    ],
)
def test_store_deliveries_need_a_capable_store(delivery: object, code: str) -> None:
    assert _codes(_order(delivery=delivery)) == [code]


def test_bopis_at_a_capable_store_needs_no_address() -> None:
    assert (
        _codes(_order(delivery=StorePickup(kind="bopis", pickup_store_id="STORE-PICKUP"), ship_to=None)) == []
    )


def test_holds_from_the_oms_and_from_policy() -> None:
    held = _order(holds=(HoldReason.PAYMENT_PENDING,), order_total=Decimal("500"))
    verdict = validate_order(held, network=NETWORK, known_skus=_skus(held), policy=POLICY, now=NOW)
    assert verdict.valid and verdict.holds == (HoldReason.PAYMENT_PENDING,)
    pricey = _order(order_total=Decimal("9999"))
    verdict = validate_order(pricey, network=NETWORK, known_skus=_skus(pricey), policy=POLICY, now=NOW)
    assert verdict.holds == (HoldReason.FRAUD_REVIEW,), "over the policy's value threshold: a person looks"


def test_postal_codes_are_normalised_and_checked_per_country() -> None:
    assert normalise_postal_code(" sw1a   1aa ") == "SW1A 1AA"
    assert postal_code_valid("GB", "sw1a 1aa")
    assert not postal_code_valid("GB", "12345")
    assert postal_code_valid("US", "10001-1234")
    assert postal_code_valid("SE", "114 55")


def test_status_transitions_are_new_states_until_the_order_ends() -> None:
    assert is_transition(None, OrderState.RECEIVED)
    assert is_transition(OrderState.PLANNED, OrderState.RESERVED)
    assert not is_transition(OrderState.RESERVED, OrderState.RESERVED)
    assert not is_transition(OrderState.CANCELLED, OrderState.RELEASED)
    assert not is_transition(OrderState.REJECTED, OrderState.VALIDATED)
