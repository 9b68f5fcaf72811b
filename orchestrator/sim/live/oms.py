"""What the simulated OMS sends: orders placed now, at a rate with flash-sale
bursts, and what customers and the OMS do with them afterwards (amend,
cancel, release a payment or fraud hold). Pure: the OMS process plays it out.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime

from orchestrator.contract.base import EventPayload
from orchestrator.contract.common import HoldReason
from orchestrator.contract.orders import (
    CancelReason,
    LineQuantityChange,
    OrderAmended,
    OrderCancelled,
    OrderCreated,
    OrderHoldReleased,
)
from orchestrator.sim.geography import SimNetwork, customer_address
from orchestrator.sim.orders import OrderMaker, order_total


@dataclass(frozen=True, slots=True)
class TrafficShape:
    """How much the OMS sends and what shoppers do."""

    #: Orders per second outside flash sales.
    rate: float = 5.0
    #: Share of orders amended (a quantity or the address) shortly after they were placed.
    amend: float = 0.03
    #: Share of orders the customer cancels shortly after placing them.
    cancel: float = 0.02
    #: Share of orders placed on hold (payment pending, fraud review) and released a little later.
    hold: float = 0.02
    #: A flash sale starts every this many seconds (0: never) ...
    flash_sale_every_s: float = 45.0
    #: ... lasts this long ...
    flash_sale_seconds: float = 5.0
    #: ... multiplies the rate by this, and puts one of a few hot SKUs in every order.
    flash_sale_factor: float = 4.0


@dataclass(frozen=True, slots=True)
class FollowUp:
    """Something the OMS sends about an order `after_s` seconds after it was placed."""

    after_s: float
    event: EventPayload


def in_flash_sale(shape: TrafficShape, elapsed_s: float) -> bool:
    """True while a flash sale runs, `elapsed_s` seconds into the run."""
    every = shape.flash_sale_every_s
    if every <= 0:
        return False
    # The first sale starts one period in, so a run begins with ordinary traffic.
    return elapsed_s >= every and elapsed_s % every < shape.flash_sale_seconds


class OmsTraffic:
    """The seeded order stream of one live run: when each order comes and what follows it."""

    def __init__(self, network: SimNetwork, *, seed: int, run_id: str, shape: TrafficShape) -> None:
        self.network = network
        self.shape = shape
        self.run_id = run_id
        self.rng = random.Random(seed)
        self.maker = OrderMaker(network, self.rng)
        # The flash-sale items: a handful of mid-popularity products (the top sellers sell anyway).
        catalogue = len(network.skus)
        self.hot_skus = tuple(self.rng.sample(range(min(5, catalogue), min(40, catalogue)), k=3))

    def in_flash_sale(self, elapsed_s: float) -> bool:
        return in_flash_sale(self.shape, elapsed_s)

    def gap_s(self, elapsed_s: float) -> float:
        """Seconds until the next order (exponential gaps: arrivals are Poisson)."""
        rate = self.shape.rate * (self.shape.flash_sale_factor if self.in_flash_sale(elapsed_s) else 1.0)
        return self.rng.expovariate(rate)

    def order(self, n: int, placed: datetime, elapsed_s: float) -> tuple[OrderCreated, list[FollowUp]]:
        """The `n`-th order of the run, placed at `placed`, and what the OMS will send about it later."""
        hot = self.hot_skus if self.in_flash_sale(elapsed_s) else ()
        order = self.maker.make(f"LIVE-{self.run_id}-{n:06d}", placed, hot_skus=hot)
        rng = self.rng
        follow: list[FollowUp] = []
        roll = rng.random()
        if roll < self.shape.hold:
            hold = rng.choice((HoldReason.PAYMENT_PENDING, HoldReason.FRAUD_REVIEW))
            order = order.model_copy(update={"holds": (hold,)})
            follow.append(
                FollowUp(rng.uniform(2.0, 6.0), OrderHoldReleased(order_id=order.order_id, hold=hold))
            )
            return order, follow
        roll -= self.shape.hold
        if roll < self.shape.cancel:
            cancel = OrderCancelled(
                order_id=order.order_id,
                reason=CancelReason.CUSTOMER_REQUEST,
                detail="simulated: changed mind",
            )
            follow.append(FollowUp(rng.uniform(0.2, 3.0), cancel))
        elif roll - self.shape.cancel < self.shape.amend:
            follow.append(FollowUp(rng.uniform(0.2, 3.0), self._amendment(order)))
        return order, follow

    def _amendment(self, order: OrderCreated) -> OrderAmended:
        rng = self.rng
        if order.ship_to is not None and rng.random() < 0.4:
            moved = customer_address(self.network, rng, order.customer_id)
            return OrderAmended(order_id=order.order_id, ship_to=moved)
        line = rng.choice(order.lines)
        # Mostly one more unit; sometimes the customer drops the line (unless it is the only one).
        drop = len(order.lines) > 1 and rng.random() < 0.3
        change = LineQuantityChange(line_id=line.line_id, quantity=0 if drop else line.quantity + 1)
        after = [
            other.model_copy(update={"quantity": change.quantity}) if other is line else other
            for other in order.lines
            if other is not line or change.quantity > 0
        ]
        # The OMS re-prices the basket, as a real one would: the total always matches the lines.
        return OrderAmended(
            order_id=order.order_id, line_quantities=(change,), order_total=order_total(after)
        )


__all__ = ["FollowUp", "OmsTraffic", "TrafficShape", "in_flash_sale"]
