"""One yardstick for every strategy: the engine's own candidate evaluation, under physical rules only.

Policies, the baselines and the offline optimum are all costed here, with
the objective terms of a reference policy (carrier price + late penalty +
handling per shipment, `split_cost` per extra shipment) and a penalty per
back-ordered unit. Eligibility is the engine's (`orchestrator.domain.sourcing`
candidate assessment: node capabilities, drop-ship, hazmat/oversize carriers,
distance bands, cut-offs, transit), with the business rules that policies
disagree on switched off: ship-from-store is allowed for every channel, no
channel exclusions, no tier upgrades, BOPIS transfers allowed. Capacity
pressure and rank bonuses are preferences, not costs, so they count 0. Each
policy's plan is therefore feasible here, and the optimum is a true lower
bound for all of them.

The candidate assessment is private to the engine; this module is the only
place that reaches into it, so an engine refactor breaks one adapter (and
its tests), not the simulation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from orchestrator.contract.orders import OrderCreated
from orchestrator.domain.geo import haversine_km
from orchestrator.domain.network import NetworkView
from orchestrator.domain.policy import BopisRule, Policy, ShipFromStoreRule
from orchestrator.domain.sourcing import (
    _Candidate,
    _candidates,
    _Context,
    _Destination,
    _destination,
    _digest_lines,
    _handling_classes,
    _Line,
    _quotes,
    _Rate,
)

#: What the yardstick charges per unit left behind: above any real shipment, so shipping wins.
BACKORDER_PENALTY_PER_UNIT = 250.0

#: A shipment: node id -> (line position, units).
Assignment = Mapping[str, list[tuple[int, int]]]


class _Plenty(Mapping[tuple[str, str], int]):
    """Stock without limits: eligibility must not depend on what happens to be on the shelf now."""

    def __getitem__(self, key: tuple[str, str]) -> int:
        return 1 << 30

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(())

    def __len__(self) -> int:
        return 0


def yardstick_policy(reference: Policy) -> Policy:
    """The reference policy's weights with only physical rules left (see the module doc)."""
    return reference.model_copy(
        update={
            "capacity_pressure_weight": 0.0,
            "ranked_nodes": (),
            "rank_bonus": 0.0,
            "ship_from_store": ShipFromStoreRule(enabled=True, channels="all"),
            "channel_rules": {},
            "tier_rules": {},
            "bopis": BopisRule(allow_transfer_to_pickup_store=True),
        }
    )


@dataclass(frozen=True, slots=True)
class ShipmentTerms:
    """How the yardstick carries one shipment: its cost and the cheapest service's dates and price."""

    cost: float
    delivery: date
    distance_km: float
    shipping_cost: float


@dataclass(slots=True)
class OrderOptions:
    """Every node's terms for one order, independent of stock."""

    order: OrderCreated
    lines: list[_Line]
    #: Eligible nodes by id (usable, and serving at least one line).
    nodes: dict[str, _Candidate]
    split_cost: float
    #: Great-circle km from each eligible node to where the goods go.
    distance: dict[str, float]
    #: None: the destination is unknown (every unit is back-ordered whatever the strategy).
    destination: _Destination | None

    def eligible(self, node_id: str, pos: int) -> bool:
        cand = self.nodes.get(node_id)
        return cand is not None and pos in cand.serves

    def mask(self, items: list[tuple[int, int]]) -> int:
        mask = 0
        for pos, _ in items:
            mask |= self.lines[pos].mask
        return mask

    def can_carry(self, node_id: str, items: list[tuple[int, int]]) -> bool:
        """A service of the node carries these lines together (their handling classes combined)."""
        cand = self.nodes[node_id]
        return all(pos in cand.serves for pos, _ in items) and bool(cand.rates[self.mask(items)])

    def terms(self, node_id: str, items: list[tuple[int, int]]) -> ShipmentTerms:
        cand = self.nodes[node_id]
        weight = sum(self.lines[pos].unit_weight * units for pos, units in items)
        mask = self.mask(items)
        cost = cand.cost(weight, mask)
        if cost == math.inf or not all(pos in cand.serves for pos, _ in items):
            raise ValueError(f"{node_id} cannot ship lines {items} of {self.order.order_id}")
        rate: _Rate = cand.best_rate(weight, mask)
        weight_kg = sum((self.lines[pos].unit_weight_kg * units for pos, units in items), Decimal(0))
        return ShipmentTerms(
            cost=cost,
            delivery=rate.delivery,
            distance_km=self.distance[node_id],
            shipping_cost=float(rate.shipping_cost(weight_kg)) if rate.quote is not None else 0.0,
        )

    def objective(self, assignment: Assignment) -> float:
        """The yardstick's cost of one order's plan, back-orders included."""
        shipped = [0] * len(self.lines)
        total = 0.0
        count = 0
        for node_id, items in assignment.items():
            if not items:
                continue
            total += self.terms(node_id, items).cost
            count += 1
            for pos, units in items:
                shipped[pos] += units
        total += self.split_cost * max(0, count - 1)
        short = sum(line.quantity - shipped[line.pos] for line in self.lines)
        return total + BACKORDER_PENALTY_PER_UNIT * short


def order_options(
    order: OrderCreated, *, network: NetworkView, policy: Policy, now: datetime, rules: bool = False
) -> OrderOptions:
    """What each node could do for the order under `policy` (a `yardstick_policy`), stock aside.

    `rules=True` keeps the policy's channel rules too (which node kinds an order's channel may
    ship from): what a routing policy may do, not only what is physically possible.
    """
    lines = _digest_lines(order, policy)
    dest = _destination(order, network, policy)
    if isinstance(dest, str):
        return OrderOptions(order, lines, {}, policy.split_cost, {}, None)
    multiplier = policy.priority_late_multiplier if order.priority else 1.0
    # Mirrors the context `sourcing.decide` builds, with unlimited stock and no load today.
    ctx = _Context(
        order=order,
        network=network,
        stock=_Plenty(),
        capacity_used={},
        policy=policy,
        now=now,
        excluded=frozenset(),
        attempt=0,
        dest=dest,
        lines=lines,
        late_rate=policy.late_penalty_per_day * multiplier,
        quotes=_quotes(network.services_available(now), dest),
        rank_bonuses={},
        classes=_handling_classes(lines),
        excluded_kinds=policy.excluded_kinds(order.channel) if rules else (),
        ship_from_store=policy.ship_from_store.allows(order.channel) if rules else True,
    )
    nodes = {c.node_id: c for c in _candidates(ctx) if c.usable and c.serves}
    there = dest.address
    distance = {
        node_id: haversine_km(c.node.latitude, c.node.longitude, there.latitude, there.longitude)
        for node_id, c in nodes.items()
    }
    return OrderOptions(order, lines, nodes, policy.split_cost, distance, dest)


__all__ = [
    "BACKORDER_PENALTY_PER_UNIT",
    "Assignment",
    "OrderOptions",
    "ShipmentTerms",
    "order_options",
    "yardstick_policy",
]
