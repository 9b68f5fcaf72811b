"""Where returned goods go: the nearest node able to receive and restock them, a store for a return
brought in person, or nowhere (a refund without return, below the policy's value).

Pure and deterministic: the same return, network and policy give the same
node and the same label. One node takes the whole return, so the customer
sends one parcel with one label.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from orchestrator.contract.common import (
    Address,
    CarrierAssignment,
    ContractModel,
    NodeCapability,
    ProductLabel,
)
from orchestrator.contract.network import CarrierServiceUpserted, NodeUpserted
from orchestrator.contract.returns import ReturnLabel, ReturnMethod, ReturnResolution
from orchestrator.domain.geo import haversine_km
from orchestrator.domain.network import NetworkView
from orchestrator.domain.returns_policy import ReturnsPolicy

#: The node capability each handling label needs (other labels need none to be received).
_CAPABILITY_FOR = {
    ProductLabel.HAZMAT: NodeCapability.HAZMAT,
    ProductLabel.OVERSIZE: NodeCapability.OVERSIZE,
}


class ReturnedLine(ContractModel):
    """A returned line with what the order says about it (price, weight, handling)."""

    line_id: str
    sku: str
    quantity: int
    unit_price: Decimal
    unit_weight_kg: Decimal | None = None
    labels: tuple[ProductLabel, ...] = ()


def value_of(lines: Sequence[ReturnedLine], quantities: dict[str, int] | None = None) -> Decimal:
    """What the lines are worth at their order price (`quantities`: only that many units of each)."""
    total = Decimal("0")
    for line in lines:
        units = line.quantity if quantities is None else min(line.quantity, quantities.get(line.line_id, 0))
        total += line.unit_price * units
    return total


def goods_come_back(resolution: ReturnResolution, value: Decimal, policy: ReturnsPolicy) -> bool:
    """False when the customer keeps the goods (a refund without return)."""
    rule = policy.refund_without_return
    return not (resolution in rule.resolutions and value < rule.below)


@dataclass(frozen=True, slots=True)
class ReturnRoute:
    """Where the goods go: a node (with a label for a parcel), or nowhere (`node_id` None)."""

    node_id: str | None
    method: ReturnMethod
    label: ReturnLabel | None
    why: str


@dataclass(frozen=True, slots=True)
class Unroutable:
    """No node can take the return; `code` and `why` go to the OMS."""

    code: str
    why: str


def _price(
    service: CarrierServiceUpserted, weight_kg: Decimal, origin: Address, to: Address
) -> Decimal | None:
    """What the service charges for the parcel, or None when it does not serve the journey."""
    cost = service.cost
    if cost.kind == "distance_bands":
        km = haversine_km(origin.latitude, origin.longitude, to.latitude, to.longitude)
        band = next((b for b in cost.bands if km <= b.max_km), None)
        if band is None:
            return None
        surcharge = band.surcharge
    else:
        postcode = to.postal_code.replace(" ", "").upper()
        best: tuple[int, Decimal] | None = None
        for zone in cost.zones:
            if zone.country != to.country:
                continue
            prefixes = zone.postal_prefixes or ("",)
            for prefix in prefixes:
                p = prefix.replace(" ", "").upper()
                if postcode.startswith(p) and (best is None or len(p) > best[0]):
                    best = (len(p), zone.surcharge)
        if best is None:
            return None
        surcharge = best[1]
    return cost.base + cost.per_kg * weight_kg + surcharge


def choose_label(
    lines: Sequence[ReturnedLine],
    origin: Address,
    node: NodeUpserted,
    services: Sequence[CarrierServiceUpserted],
    policy: ReturnsPolicy,
) -> ReturnLabel | None:
    """The cheapest allowed service carrying the parcel from the customer to the node (None: none does)."""
    labels = {label for line in lines for label in line.labels}
    weight = sum(
        ((line.unit_weight_kg or policy.default_unit_weight_kg) * line.quantity for line in lines),
        Decimal("0"),
    )
    best: tuple[Decimal, int, str, CarrierServiceUpserted] | None = None
    for service in services:
        if service.service_level not in policy.label_service_levels:
            continue
        if node.location.country not in service.countries or origin.country not in service.countries:
            continue
        if ProductLabel.HAZMAT in labels and not service.hazmat_allowed:
            continue
        if ProductLabel.OVERSIZE in labels and not service.oversize_allowed:
            continue
        price = _price(service, weight, origin, node.location)
        if price is None:
            continue
        key = (price, service.transit_days, service.service_id, service)
        if best is None or key[:3] < best[:3]:
            best = key
    if best is None:
        return None
    service = best[3]
    return ReturnLabel(
        carrier=CarrierAssignment(carrier=service.carrier, service_id=service.service_id),
        from_address=origin,
        to_address=node.location,
    )


def _missing_capability(node: NodeUpserted, lines: Sequence[ReturnedLine]) -> str | None:
    for line in lines:
        for label in line.labels:
            needed = _CAPABILITY_FOR.get(label)
            if needed is not None and needed not in node.capabilities:
                return f"{node.node_id} cannot handle {label.value} goods ({line.sku})"
    return None


def _distance(origin: Address, node: NodeUpserted) -> float:
    return haversine_km(origin.latitude, origin.longitude, node.location.latitude, node.location.longitude)


def route_return(
    *,
    lines: Sequence[ReturnedLine],
    resolution: ReturnResolution,
    method: ReturnMethod,
    store_id: str | None,
    origin: Address | None,
    network: NetworkView,
    stocked: Collection[tuple[str, str]],
    policy: ReturnsPolicy,
    now: datetime,
) -> ReturnRoute | Unroutable:
    """Where the goods of a return go.

    `origin` is where the goods are now (the customer's address); `stocked`
    holds the (node, SKU) pairs the ledger knows, i.e. what each node sells.
    """
    value = value_of(lines)
    if not goods_come_back(resolution, value, policy):
        return ReturnRoute(
            node_id=None,
            method=method,
            label=None,
            why=f"worth {value:.2f}, below the {policy.refund_without_return.below:.2f} a return is worth "
            "collecting: the customer keeps the goods",
        )
    if method is ReturnMethod.IN_STORE and store_id is not None:
        store = network.nodes.get(store_id)
        if store is None:
            return Unroutable("unknown_return_store", f"store {store_id} is not in the network")
        if store.kind not in policy.in_store_node_kinds:
            return Unroutable(
                "store_cannot_take_returns", f"{store_id} is a {store.kind.value}, which takes no returns"
            )
        missing = _missing_capability(store, lines)
        if missing is not None:
            return Unroutable("store_cannot_take_returns", missing)
        # The customer chose the store: a store closed today is open again when they come.
        return ReturnRoute(store_id, method, None, f"the customer brings the goods to {store_id}")
    if origin is None:
        return Unroutable("no_return_origin", "the order has no address the goods come back from")
    kinds = policy.in_store_node_kinds if method is ReturnMethod.IN_STORE else policy.ship_back_node_kinds
    services = network.services_available(now) if method is ReturnMethod.SHIP_BACK else []
    skus = {line.sku for line in lines}
    candidates: list[tuple[tuple[bool, float, str], NodeUpserted, ReturnLabel | None]] = []
    for node in network.nodes.values():
        if not node.open or node.kind not in kinds or _missing_capability(node, lines) is not None:
            continue
        label = None
        if method is ReturnMethod.SHIP_BACK:
            label = choose_label(lines, origin, node, services, policy)
            if label is None:
                continue
        stocks_all = all((node.node_id, sku) in stocked for sku in skus)
        rank = (
            policy.prefer_nodes_stocking_the_sku and not stocks_all,
            _distance(origin, node),
            node.node_id,
        )
        candidates.append((rank, node, label))
    if not candidates:
        where = "store" if method is ReturnMethod.IN_STORE else "node"
        return Unroutable(
            "no_return_node",
            f"no open {where} of the kinds {', '.join(k.value for k in kinds)} can take these goods"
            + (" with a label service reaching it" if method is ReturnMethod.SHIP_BACK else ""),
        )
    (prefers_other, km, _), node, label = min(candidates, key=lambda c: c[0])
    which = (
        "the nearest node that sells these goods"
        if policy.prefer_nodes_stocking_the_sku and not prefers_other
        else "the nearest node able to receive them"
    )
    how = f"label by {label.carrier.service_id}" if label is not None else "brought in by the customer"
    return ReturnRoute(
        node.node_id,
        method,
        label,
        f"to {node.node_id}, {which} ({km:.0f} km away); {how}",
    )


__all__ = [
    "ReturnRoute",
    "ReturnedLine",
    "Unroutable",
    "choose_label",
    "goods_come_back",
    "route_return",
    "value_of",
]
