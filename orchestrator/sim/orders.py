"""A seeded stream of realistic orders for a simulated network.

Mostly web and app orders for standard home delivery, some express and
next-day, some collected in store (BOPIS at a store that offers pickup, or
shipped to a store); 1 to 5 lines with few units; promised dates counted in
working days from when the order was placed. The same seed always gives the
same stream.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TypeVar

from orchestrator.contract.common import (
    Channel,
    CustomerTier,
    DeliveryOption,
    HomeDelivery,
    NodeCapability,
    NodeKind,
    OrderLine,
    ProductLabel,
    ShipToStore,
    StorePickup,
)
from orchestrator.contract.orders import OrderCreated
from orchestrator.domain.sourcing import after_working_days
from orchestrator.sim.geography import SimNetwork, customer_address

_CHANNELS = (
    (Channel.WEB, 0.48),
    (Channel.APP, 0.27),
    (Channel.MARKETPLACE, 0.12),
    (Channel.STORE, 0.05),
    (Channel.CALL_CENTRE, 0.05),
    (Channel.B2B_EDI, 0.03),
)
_TIERS = (
    (CustomerTier.STANDARD, 0.70),
    (CustomerTier.SILVER, 0.17),
    (CustomerTier.GOLD, 0.09),
    (CustomerTier.PLATINUM, 0.04),
)
#: Delivery option -> (share, working days promised after the order day).
_DELIVERY = (
    ("standard", 0.66, 3),
    ("express", 0.10, 2),
    ("next_day", 0.06, 1),
    ("bopis", 0.10, 1),
    ("ship_to_store", 0.08, 4),
)
_LINES = ((1, 0.42), (2, 0.26), (3, 0.16), (4, 0.10), (5, 0.06))
#: Share of orders that ship complete or not at all (one node must have every line).
DEFAULT_SHIP_COMPLETE_RATE = 0.06
#: Start of the default stream: a Monday morning, so cut-offs and weekends both come into play.
DEFAULT_START = datetime(2025, 3, 10, 7, 0, tzinfo=UTC)


T = TypeVar("T")


def _pick(rng: random.Random, table: tuple[tuple[T, float], ...]) -> T:
    return rng.choices([v for v, _ in table], weights=[w for _, w in table])[0]


def order_total(lines: Sequence[OrderLine]) -> Decimal:
    """What the customer pays: the goods, and 3.99 delivery under 50."""
    goods = sum((line.unit_price * line.quantity for line in lines), Decimal(0))
    shipping = Decimal("0") if goods >= 50 else Decimal("3.99")
    return (goods + shipping).quantize(Decimal("0.01"))


class OrderMaker:
    """Draws one realistic order at a time from a seeded generator.

    `order_stream` uses it for the offline comparisons, and the live OMS
    simulator for orders placed now; both see the same mix.
    """

    def __init__(
        self,
        network: SimNetwork,
        rng: random.Random,
        *,
        ship_complete_rate: float = DEFAULT_SHIP_COMPLETE_RATE,
        priority_rate: float = 0.05,
    ) -> None:
        if not 0 <= ship_complete_rate <= 1:
            raise ValueError(f"ship_complete_rate must be between 0 and 1, not {ship_complete_rate}")
        self.network = network
        self.rng = rng
        self.ship_complete_rate = ship_complete_rate
        self.priority_rate = priority_rate
        self.pickup_stores = sorted(
            n.node_id
            for n in network.nodes
            if n.kind is NodeKind.STORE and NodeCapability.BOPIS_PICKUP in n.capabilities
        )
        self.receiving_stores = sorted(
            n.node_id
            for n in network.nodes
            if n.kind is NodeKind.STORE and NodeCapability.SHIP_TO_STORE_RECEIVE in n.capabilities
        )
        # Popular products sell more: a Zipf-like weight over the catalogue.
        self.skus = list(network.skus)
        self.popularity = [1.0 / (rank + 1) ** 0.8 for rank in range(len(self.skus))]

    def make(self, order_id: str, placed: datetime, *, hot_skus: Sequence[int] = ()) -> OrderCreated:
        """One order placed at `placed`; `hot_skus` (catalogue indexes) are the flash-sale items
        a line is drawn from first."""
        rng = self.rng
        skus = self.skus
        kind = _pick(rng, tuple((kind, share) for kind, share, _ in _DELIVERY))
        if (kind == "bopis" and not self.pickup_stores) or (
            kind == "ship_to_store" and not self.receiving_stores
        ):
            kind = "standard"
        delivery: DeliveryOption
        if kind == "bopis":
            delivery = StorePickup(kind="bopis", pickup_store_id=rng.choice(self.pickup_stores))
        elif kind == "ship_to_store":
            delivery = ShipToStore(kind="ship_to_store", store_id=rng.choice(self.receiving_stores))
        count_lines = min(_pick(rng, _LINES), len(skus))
        chosen: list[int] = []
        if hot_skus:
            chosen.append(rng.choice(list(hot_skus)))
        while len(chosen) < count_lines:
            index = rng.choices(range(len(skus)), weights=self.popularity)[0]
            if index not in chosen:
                chosen.append(index)
        lines = tuple(
            OrderLine(
                line_id=str(i + 1),
                sku=skus[index].sku,
                quantity=rng.choices((1, 2, 3, 4), weights=(0.72, 0.18, 0.07, 0.03))[0],
                unit_price=skus[index].unit_price,
                unit_weight_kg=skus[index].unit_weight_kg,
                labels=skus[index].labels,
                drop_ship_vendor_id=skus[index].drop_ship_vendor_id,
            )
            for i, index in enumerate(chosen)
        )
        # A shop offers only the speeds its carriers can do for the basket: dangerous goods go by
        # road (standard), and the next-day service takes no oversize parcels.
        labels = {label for line in lines for label in line.labels}
        if kind in ("express", "next_day") and ProductLabel.HAZMAT in labels:
            kind = "standard"
        elif kind == "next_day" and ProductLabel.OVERSIZE in labels:
            kind = "express"
        if kind in ("standard", "express", "next_day"):
            delivery = HomeDelivery(kind=kind)
        promised_days = next(days for k, _, days in _DELIVERY if k == kind)
        customer = f"CUST-{rng.randint(1, 250_000):06d}"
        # Collect orders carry the customer's address too: the OMS knows it, the plan ignores it.
        ship_to = customer_address(self.network, rng, customer)
        return OrderCreated(
            order_id=order_id,
            channel=_pick(rng, _CHANNELS),
            customer_id=customer,
            customer_tier=_pick(rng, _TIERS),
            placed_at=placed,
            ship_to=ship_to,
            lines=lines,
            order_total=order_total(lines),
            currency=self.network.currency,
            delivery=delivery,
            promised_delivery_date=after_working_days(placed.date(), promised_days),
            ship_complete=rng.random() < self.ship_complete_rate,
            priority=rng.random() < self.priority_rate,
        )


def order_stream(
    network: SimNetwork,
    *,
    seed: int,
    count: int,
    start: datetime = DEFAULT_START,
    hours: float = 36.0,
    ship_complete_rate: float = DEFAULT_SHIP_COMPLETE_RATE,
    priority_rate: float = 0.05,
) -> list[OrderCreated]:
    """`count` orders placed between `start` and `start + hours`, in the order they were placed."""
    rng = random.Random(seed)
    maker = OrderMaker(network, rng, ship_complete_rate=ship_complete_rate, priority_rate=priority_rate)
    offsets = sorted(rng.uniform(0, hours * 3600) for _ in range(count))
    return [
        maker.make(f"SIM-{seed}-{n + 1:06d}", start + timedelta(seconds=round(offset)))
        for n, offset in enumerate(offsets)
    ]


__all__ = ["DEFAULT_SHIP_COMPLETE_RATE", "DEFAULT_START", "OrderMaker", "order_stream", "order_total"]
