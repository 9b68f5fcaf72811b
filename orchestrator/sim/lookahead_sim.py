"""Look-ahead sourcing against myopic sourcing and the clairvoyant optimum, on scarce stock.

The issue the look-ahead answers only shows when stock is short somewhere:
with the seeded network's deep DC stock a stream of a few hundred orders
never runs a node dry, and every strategy ties. So this comparison starts
from scarce stock (`scarce_stock`): each SKU's units are `cover` times what
the stream will ask of it in total, spread over the nodes in the proportions
of the seeded inventory. Nationally there is enough of everything (cover >
1); what the plans decide is which node's units each order uses up, and so
which later orders find their nearest node empty and ship from afar, split
or wait. (The scenario is built knowing the stream's total demand per SKU, as
a buyer who forecast the national quantity right; no strategy sees it.)

Three strategies plan the same stream from the same stock, in the order the
orders were placed, consuming what they plan:

- myopic: the engine with the first policy (look-ahead off): the cheapest
  plan for each order alone;
- look-ahead: the engine with the second policy, whose look-ahead prices
  are computed every `refresh_seconds` of simulated time from the orders
  already placed in the last `window_hours` (never a later one) and the
  strategy's own stock at that moment;
- clairvoyant: the offline optimum over the whole stream at once
  (`orchestrator.sim.optimum`, the MIP with hindsight), under the rules
  the two policies keep: their `max_shipments`, and for each order only the
  nodes their channel and tier rules let it ship from (either policy's).
  Node capacity is left out; it never binds in these streams. Stopped at a
  time limit, HiGHS then reports the best plan it found (an upper bound of the
  optimum) and its proven lower bound. The share of the gap closed,
  (myopic - look-ahead) / (myopic - clairvoyant), is reported against the
  lower bound: the gap to a lower bound can only be larger than the true
  gap, so that share is conservative (never more than the true share); the
  share against the best plan found is the optimistic end. When the solver
  proves optimality the two are one.

All three are costed by the yardstick of `orchestrator.sim.costing` (the
first policy's weights, physical rules only, 250 per unit back-ordered): the
look-ahead term is a steering price, not a cost, and is never counted.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TextIO

from orchestrator.contract.orders import OrderCreated
from orchestrator.domain.lookahead import NO_OPPORTUNITY, OpportunityCosts, Sale, lookahead_prices, sales_of
from orchestrator.domain.network import NetworkView
from orchestrator.domain.policy import Policy
from orchestrator.sim.costing import BACKORDER_PENALTY_PER_UNIT, OrderOptions, order_options, yardstick_policy
from orchestrator.sim.geography import SimNetwork
from orchestrator.sim.optimum import Optimum, solve_optimum
from orchestrator.sim.simulate import Stock, StrategyResult, _record, policy_plan

#: Each SKU's stock as a multiple of what the stream asks of it: enough nationally, short locally.
DEFAULT_COVER = 1.5
#: Seconds HiGHS may spend on the clairvoyant optimum (it reports its bounds when stopped).
DEFAULT_TIME_LIMIT_S = 60.0
#: The optimum is stopped once proven within this fraction of its lower bound: far finer than
#: the gaps between strategies, and much quicker to reach than the default 1e-7.
_OPTIMUM_REL_GAP = 1e-4


def scarce_stock(network: SimNetwork, orders: Sequence[OrderCreated], cover: float) -> Stock:
    """Each SKU's units: `cover` x the stream's demand for it, over the nodes in the seeded proportions.

    Whole units by largest remainder (ties by node id), so each SKU's total is the rounded target.
    """
    if cover <= 0:
        raise ValueError("cover must be positive")
    demand: dict[str, int] = {}
    for order in orders:
        for line in order.lines:
            demand[line.sku] = demand.get(line.sku, 0) + line.quantity
    seeded: dict[str, list[tuple[str, int]]] = {}
    for (node_id, sku), units in sorted(network.stock().items()):
        if units > 0:
            seeded.setdefault(sku, []).append((node_id, units))
    stock: Stock = {}
    for sku, holders in seeded.items():
        total = sum(units for _, units in holders)
        target = round(cover * demand.get(sku, 0))
        shares = [(node_id, target * units / total) for node_id, units in holders]
        whole = {node_id: math.floor(share) for node_id, share in shares}
        left = target - sum(whole.values())
        by_remainder = sorted(shares, key=lambda s: (-(s[1] - math.floor(s[1])), s[0]))
        for node_id, _ in by_remainder[:left]:
            whole[node_id] += 1
        for node_id, units in whole.items():
            stock[(node_id, sku)] = units
    return stock


class _Pricer:
    """The look-ahead prices a strategy plans with, recomputed every `refresh_seconds` of stream time.

    It remembers the customer lines of the orders already placed (never a later one), keeps those
    of the last `window_hours`, and prices against the strategy's stock at the refresh.
    """

    def __init__(self, policy: Policy, network: NetworkView, start: datetime) -> None:
        self.policy = policy
        self.network = network
        self.start = start
        self.window = timedelta(hours=policy.lookahead.window_hours)
        self.every = timedelta(seconds=policy.lookahead.refresh_seconds)
        self.seen: deque[tuple[datetime, list[Sale]]] = deque()
        self.prices: OpportunityCosts = NO_OPPORTUNITY
        self.next_refresh = start
        self.refreshes = 0
        self.seconds = 0.0

    def before(self, now: datetime, stock: Mapping[tuple[str, str], int]) -> OpportunityCosts:
        """The prices for an order placed at `now`, refreshed first when they are due."""
        if now >= self.next_refresh:
            while self.seen and self.seen[0][0] < now - self.window:
                self.seen.popleft()
            observed = min(self.window, now - self.start).total_seconds() / 3600
            started = time.perf_counter()
            if self.seen and observed > 0:
                sales = [sale for _, sales in self.seen for sale in sales]
                self.prices = lookahead_prices(
                    sales,
                    {key: units for key, units in stock.items() if units > 0},
                    network=self.network,
                    policy=self.policy,
                    now=now,
                    observed_hours=observed,
                )
            self.seconds += time.perf_counter() - started
            self.refreshes += 1
            self.next_refresh = now + self.every
        return self.prices

    def after(self, order: OrderCreated) -> None:
        """The order is placed: it is history for the next refresh."""
        self.seen.append((order.placed_at, sales_of(order, self.network)))


@dataclass
class LookaheadRun:
    """One strategy over the stream, in the yardstick's terms."""

    name: str
    result: StrategyResult
    backordered_units: int = 0
    seconds: float = 0.0
    refreshes: int = 0
    refresh_seconds: float = 0.0

    def to_json(self) -> dict[str, object]:
        r = self.result
        return {
            "strategy": self.name,
            "objective": round(r.objective, 2),
            "shipping_cost": round(r.shipping_cost, 2),
            "shipments": r.shipments,
            "split_orders": r.split_orders,
            "backordered_units": self.backordered_units,
            "backorder_cost": self.backordered_units * BACKORDER_PENALTY_PER_UNIT,
            "seconds": round(self.seconds, 2),
            "price_refreshes": self.refreshes,
            "pricing_seconds": round(self.refresh_seconds, 2),
        }


def _permitted(order: OrderCreated, network: NetworkView, policies: Sequence[Policy]) -> dict[str, set[int]]:
    """The line positions each node may ship under the rules of any of `policies`: the clairvoyant
    keeps the rules the strategies it is compared with keep, so it is a plan either could make."""
    permitted: dict[str, set[int]] = {}
    for policy in policies:
        options = order_options(order, network=network, policy=policy, now=order.placed_at, rules=True)
        for node_id, cand in options.nodes.items():
            permitted.setdefault(node_id, set()).update(cand.serves)
    return permitted


def _plan_stream(
    name: str,
    network: NetworkView,
    stream: Sequence[OrderOptions],
    policy: Policy,
    start_stock: Stock,
    pricer: _Pricer | None,
    progress: TextIO | None,
) -> LookaheadRun:
    run = LookaheadRun(name, StrategyResult(name, "policy"))
    stock = dict(start_stock)
    used_by_day: dict[object, dict[str, int]] = {}
    started = time.perf_counter()
    for i, options in enumerate(stream, start=1):
        order = options.order
        used = used_by_day.setdefault(order.placed_at.date(), {})
        prices = NO_OPPORTUNITY if pricer is None else pricer.before(order.placed_at, stock)
        plan, _ = policy_plan(options, policy, network, stock, used, prices)
        shipped = sum(units for items in plan.values() for _, units in items)
        run.backordered_units += sum(line.quantity for line in options.lines) - shipped
        _record(run.result, options, plan, stock)
        for node_id, items in plan.items():
            for pos, _ in items:
                if stock[(node_id, options.lines[pos].sku)] < 0:
                    # decide must never plan more than the stock it was given; stop loudly if it did.
                    raise RuntimeError(
                        f"{name} planned more {options.lines[pos].sku} at {node_id} than it held"
                    )
        if pricer is not None:
            pricer.after(order)
        if progress is not None and len(stream) >= 200 and i % max(1, len(stream) // 4) == 0:
            print(f"  {name}: {i}/{len(stream)} orders", file=progress, flush=True)
    run.seconds = time.perf_counter() - started
    if pricer is not None:
        run.refreshes, run.refresh_seconds = pricer.refreshes, pricer.seconds
    return run


@dataclass
class LookaheadReport:
    """Myopic, look-ahead and clairvoyant costs of one stream, and the share of the gap closed."""

    seed: int
    orders: int
    cover: float
    units_demanded: int
    units_stocked: int
    #: Orders of the stream that ship complete or not at all (`simulate --ship-complete-rate`).
    ship_complete_orders: int
    myopic: LookaheadRun
    lookahead: LookaheadRun
    clairvoyant: Optimum
    time_limit_s: float
    settings: dict[str, object] = field(default_factory=dict)

    def gap_closed(self, reference: float) -> float | None:
        """(myopic - look-ahead) / (myopic - reference); None when myopic is no worse than it."""
        gap = self.myopic.result.objective - reference
        if gap <= 1e-9:
            return None
        return (self.myopic.result.objective - self.lookahead.result.objective) / gap

    def gap_parts(self) -> dict[str, float]:
        """The myopic-to-best-plan gap split into units held (at the yardstick's price per unit) and
        the rest (shipping, handling, splits), and what look-ahead saves of each (negative: adds)."""
        held_cost = BACKORDER_PENALTY_PER_UNIT
        myopic_held = held_cost * self.myopic.backordered_units
        ahead_held = held_cost * self.lookahead.backordered_units
        best_held = held_cost * self.clairvoyant.backordered_units
        myopic_rest = self.myopic.result.objective - myopic_held
        ahead_rest = self.lookahead.result.objective - ahead_held
        best_rest = self.clairvoyant.objective - best_held
        return {
            "held": round(myopic_held - best_held, 2),
            "rest": round(myopic_rest - best_rest, 2),
            "held_saved": round(myopic_held - ahead_held, 2),
            "rest_saved": round(myopic_rest - ahead_rest, 2),
        }

    def to_json(self) -> dict[str, object]:
        return {
            "seed": self.seed,
            "orders": self.orders,
            "ship_complete_orders": self.ship_complete_orders,
            "stock_cover": self.cover,
            "units_demanded": self.units_demanded,
            "units_stocked": self.units_stocked,
            "lookahead_settings": self.settings,
            "strategies": [self.myopic.to_json(), self.lookahead.to_json()],
            "clairvoyant": {
                **asdict(self.clairvoyant),
                "kind": "offline MIP with hindsight (HiGHS), stopped at the time limit or a 1e-4 gap",
                "time_limit_s": self.time_limit_s,
            },
            "gap_closed_vs_lower_bound": self.gap_closed(self.clairvoyant.lower_bound),
            "gap_closed_vs_best_plan": self.gap_closed(self.clairvoyant.objective),
            "gap_parts": self.gap_parts(),
        }


def compare_lookahead(
    network: SimNetwork,
    orders: Sequence[OrderCreated],
    myopic: Policy,
    lookahead: Policy,
    *,
    seed: int,
    cover: float = DEFAULT_COVER,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    progress: TextIO | None = None,
) -> LookaheadReport:
    """Plan `orders` myopically (`myopic`, look-ahead off) and with look-ahead (`lookahead`, on),
    from `scarce_stock`, and solve the clairvoyant optimum; see the module doc."""
    if myopic.lookahead.enabled:
        raise ValueError(f"policy {myopic.version} has look-ahead on: the myopic strategy needs it off")
    if not lookahead.lookahead.enabled:
        raise ValueError(f"policy {lookahead.version} has look-ahead off")
    if not orders:
        raise ValueError("the look-ahead comparison needs orders")
    view = network.view()
    yardstick = yardstick_policy(myopic)
    stream = [order_options(o, network=view, policy=yardstick, now=o.placed_at) for o in orders]
    stock = scarce_stock(network, orders, cover)
    start = orders[0].placed_at
    first = _plan_stream(myopic.version, view, stream, myopic, stock, None, progress)
    pricer = _Pricer(lookahead, view, start)
    second = _plan_stream(lookahead.version, view, stream, lookahead, stock, pricer, progress)
    if progress is not None:
        print(
            f"  solving the clairvoyant optimum of {len(orders)} orders with HiGHS...",
            file=progress,
            flush=True,
        )
    best = solve_optimum(
        stream,
        stock,
        time_limit_s=time_limit_s,
        rel_gap=_OPTIMUM_REL_GAP,
        max_shipments=max(myopic.max_shipments, lookahead.max_shipments),
        allowed=[_permitted(order, view, (myopic, lookahead)) for order in orders],
    )
    settings = lookahead.lookahead.model_dump()
    return LookaheadReport(
        seed=seed,
        orders=len(orders),
        cover=cover,
        units_demanded=sum(line.quantity for o in orders for line in o.lines),
        units_stocked=sum(stock.values()),
        ship_complete_orders=sum(1 for o in orders if o.ship_complete),
        myopic=first,
        lookahead=second,
        clairvoyant=best,
        time_limit_s=time_limit_s,
        settings=settings,
    )


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def format_lookahead_table(report: LookaheadReport) -> str:
    """The comparison as a markdown table, and the share of the gap closed."""
    head = (
        "| strategy | cost (yardstick) | shipping cost | shipments | split orders | back-ordered units "
        "| seconds |"
    )
    rows = [head, "|---|---:|---:|---:|---:|---:|---:|"]
    for label, run in (("myopic", report.myopic), ("look-ahead", report.lookahead)):
        r = run.result
        rows.append(
            f"| {label} ({run.name}) | {r.objective:,.2f} | {r.shipping_cost:,.2f} | {r.shipments} | "
            f"{r.split_orders} | {run.backordered_units} | {run.seconds:.1f} |"
        )
    best = report.clairvoyant
    bound = "proven optimal within 0.01%" if best.optimal else f"stopped; lower bound {best.lower_bound:,.2f}"
    rows.append(
        f"| clairvoyant (offline MIP, HiGHS: {bound}) | {best.objective:,.2f} | | | | "
        f"{best.backordered_units} | {best.seconds:.1f} |"
    )
    closed_low = report.gap_closed(best.lower_bound)
    closed_best = report.gap_closed(best.objective)
    closed = (
        f"Gap closed, (myopic - look-ahead) / (myopic - clairvoyant): {_share(closed_low)} against the "
        f"optimum's lower bound {best.lower_bound:,.2f} (conservative), {_share(closed_best)} against the "
        f"best hindsight plan {best.objective:,.2f}."
    )
    parts = report.gap_parts()
    where = (
        f"Of the gap to the best hindsight plan, {parts['held']:,.2f} is units held (myopic "
        f"{report.myopic.backordered_units}, clairvoyant {best.backordered_units}, "
        f"{BACKORDER_PENALTY_PER_UNIT:g} each) and {parts['rest']:,.2f} shipping and splits; look-ahead "
        f"saves {parts['held_saved']:,.2f} of the first and {parts['rest_saved']:,.2f} of the second."
    )
    lines = [
        f"{report.orders} orders ({report.ship_complete_orders} ship complete), seed {report.seed}; stock "
        f"{report.units_stocked:,} units for {report.units_demanded:,} demanded (cover {report.cover:g} per "
        f"SKU); look-ahead priced {report.lookahead.refreshes} times "
        f"({report.lookahead.refresh_seconds:.1f} s).",
        "",
        "\n".join(rows),
        "",
        closed,
        where,
    ]
    return "\n".join(lines)


def run_lookahead(
    network: SimNetwork,
    orders: Sequence[OrderCreated],
    myopic: Policy,
    lookahead: Policy,
    *,
    seed: int,
    out: Path,
    cover: float = DEFAULT_COVER,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    stream: TextIO | None = None,
) -> LookaheadReport:
    """Compare, print the table and write `lookahead.json` in `out`: `orchestrator simulate --lookahead`."""
    stream = stream or sys.stdout  # read at call time: a redirected stdout must be honoured
    report = compare_lookahead(
        network,
        orders,
        myopic,
        lookahead,
        seed=seed,
        cover=cover,
        time_limit_s=time_limit_s,
        progress=sys.stderr,
    )
    print("\n" + format_lookahead_table(report), file=stream)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "lookahead.json"
    path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    print(f"\nwrote {path}", file=stream)
    return report


__all__ = [
    "DEFAULT_COVER",
    "DEFAULT_TIME_LIMIT_S",
    "LookaheadReport",
    "LookaheadRun",
    "compare_lookahead",
    "format_lookahead_table",
    "run_lookahead",
    "scarce_stock",
]
