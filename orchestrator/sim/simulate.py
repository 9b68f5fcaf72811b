"""Offline policy comparison: the same order stream, the same starting stock, policy against policy.

Each policy (and two baselines that store platforms ship) plans the stream
in the order it was placed, with its own copy of the stock, consuming what
it plans. Every plan is then costed by one yardstick (`orchestrator.sim.costing`)
so the strategies are compared on the same objective; on small instances
the offline optimum (`orchestrator.sim.optimum`) says how far each is from
the best possible with hindsight.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

from orchestrator.contract.common import NodeKind
from orchestrator.contract.orders import OrderCreated
from orchestrator.domain.network import NetworkView
from orchestrator.domain.policy import Policy
from orchestrator.domain.sourcing import NO_OPPORTUNITY, decide
from orchestrator.sim.costing import OrderOptions, order_options, yardstick_policy
from orchestrator.sim.geography import SimNetwork
from orchestrator.sim.optimum import Optimum, solve_optimum

#: Streams up to this many orders also get the offline optimum (the MIP grows with the stream).
OPTIMUM_MAX_ORDERS = 60

Stock = dict[tuple[str, str], int]
Plan = dict[str, list[tuple[int, int]]]


@dataclass
class StrategyResult:
    """What one strategy did over the stream; the table's row."""

    name: str
    kind: str
    orders: int = 0
    objective: float = 0.0
    shipping_cost: float = 0.0
    shipments: int = 0
    split_orders: int = 0
    planned_orders: int = 0
    promise_hits: int = 0
    backorder_orders: int = 0
    distances: list[float] = field(default_factory=list)
    decide_ms: list[float] = field(default_factory=list)

    def summary(self, optimum: Optimum | None) -> dict[str, object]:
        gap = None
        if optimum is not None and optimum.objective > 0:
            gap = (self.objective - optimum.objective) / optimum.objective
        return {
            "name": self.name,
            "kind": self.kind,
            "orders": self.orders,
            "objective": round(self.objective, 4),
            "shipping_cost": round(self.shipping_cost, 2),
            "shipments_per_order": self.shipments / self.orders if self.orders else 0.0,
            "split_rate": self.split_orders / self.planned_orders if self.planned_orders else 0.0,
            "promise_hit_rate": self.promise_hits / self.orders if self.orders else 0.0,
            "mean_distance_km": statistics.fmean(self.distances) if self.distances else 0.0,
            "backorder_rate": self.backorder_orders / self.orders if self.orders else 0.0,
            "decide_ms_per_order": statistics.fmean(self.decide_ms) if self.decide_ms else 0.0,
            "gap_to_optimum": gap,
        }


def _record(result: StrategyResult, options: OrderOptions, plan: Plan, stock: Stock) -> None:
    """Cost a plan by the yardstick, count it, and take its units off the strategy's stock."""
    order = options.order
    plan = {node_id: items for node_id, items in plan.items() if items}
    result.orders += 1
    result.objective += options.objective(plan)
    shipped = 0
    hits = True
    for node_id, items in plan.items():
        terms = options.terms(node_id, items)
        result.shipping_cost += terms.shipping_cost
        result.distances.append(terms.distance_km)
        hits = hits and terms.delivery <= order.promised_delivery_date
        for pos, units in items:
            stock[(node_id, options.lines[pos].sku)] -= units
            shipped += units
    result.shipments += len(plan)
    if plan:
        result.planned_orders += 1
        result.split_orders += len(plan) > 1
    backordered = shipped < sum(line.quantity for line in options.lines)
    result.backorder_orders += backordered
    result.promise_hits += bool(plan) and hits and not backordered


def policy_plan(
    options: OrderOptions,
    policy: Policy,
    network: NetworkView,
    stock: Stock,
    used: dict[str, int],
    opportunity: Mapping[tuple[str, str], float] = NO_OPPORTUNITY,
) -> tuple[Plan, float]:
    """The engine's plan of one order as (node -> [(line position, units)]), counting its shipments
    in `used`; and the milliseconds the decision took."""
    order = options.order
    started = time.perf_counter_ns()
    decided = decide(
        order,
        network=network,
        stock=stock,
        capacity_used=used,
        policy=policy,
        now=order.placed_at,
        opportunity=opportunity,
    )
    ms = (time.perf_counter_ns() - started) / 1e6
    position = {line.line_id: pos for pos, line in enumerate(order.lines)}
    plan: Plan = {}
    for shipment in decided.shipments:
        plan.setdefault(shipment.node_id, []).extend(
            (position[line.line_id], line.quantity) for line in shipment.lines
        )
        used[shipment.node_id] = used.get(shipment.node_id, 0) + 1
    return plan, ms


def _static_plan(options: OrderOptions, stock: Stock, ranking: Sequence[str]) -> Plan:
    """All lines from the first node in `ranking` having them all, else each from the first having it."""
    lines = options.lines
    everything = [(line.pos, line.quantity) for line in lines]

    def has(node_id: str, pos: int, taken: int = 0) -> bool:
        line = lines[pos]
        return options.eligible(node_id, pos) and stock.get((node_id, line.sku), 0) - taken >= line.quantity

    for node_id in ranking:
        if all(has(node_id, pos) for pos, _ in everything) and options.can_carry(node_id, everything):
            return {node_id: everything}
    if options.order.ship_complete:
        return {}  # one node or nothing, as the engine holds such orders
    plan: Plan = {}
    for line in lines:
        for node_id in ranking:
            items = plan.get(node_id, [])
            taken = sum(units for pos, units in items if lines[pos].sku == line.sku)
            if has(node_id, line.pos, taken) and options.can_carry(
                node_id, [*items, (line.pos, line.quantity)]
            ):
                plan.setdefault(node_id, []).append((line.pos, line.quantity))
                break
    return plan


def _closest(options: OrderOptions) -> list[str]:
    return sorted(options.nodes, key=lambda node_id: (options.distance[node_id], node_id))


def _ranked_list(network: SimNetwork) -> Callable[[OrderOptions], list[str]]:
    kinds = (NodeKind.THIRD_PARTY_LOGISTICS, NodeKind.STORE, NodeKind.DROP_SHIP_VENDOR)
    fixed = list(network.dc_ranking)
    for kind in kinds:
        fixed += sorted(n.node_id for n in network.nodes_of(kind))
    return lambda options: [node_id for node_id in fixed if node_id in options.nodes]


@dataclass
class SimulationResult:
    strategies: list[StrategyResult]
    optimum: Optimum | None
    reference_policy: str
    orders: int
    seed: int

    def to_json(self) -> dict[str, object]:
        return {
            "seed": self.seed,
            "orders": self.orders,
            "reference_policy": self.reference_policy,
            "optimum": None if self.optimum is None else asdict(self.optimum),
            "strategies": [s.summary(self.optimum) for s in self.strategies],
        }


def simulate(
    network: SimNetwork,
    orders: Sequence[OrderCreated],
    policies: Sequence[Policy],
    *,
    seed: int,
    optimum: bool | None = None,
    progress: TextIO | None = None,
) -> SimulationResult:
    """Plan `orders` under each policy and both baselines; `optimum` None: solve it for small streams."""
    if not policies:
        raise ValueError("simulate needs at least one policy")
    view = network.view()
    yardstick = yardstick_policy(policies[0])
    start_stock = network.stock()
    stream = [order_options(o, network=view, policy=yardstick, now=o.placed_at) for o in orders]
    results: list[StrategyResult] = []
    names: set[str] = set()
    for policy in policies:
        name = policy.version
        while name in names:  # two files with one version still get two rows
            name += "'"
        names.add(name)
        result = StrategyResult(name, "policy")
        stock = dict(start_stock)
        used_by_day: dict[object, dict[str, int]] = {}
        for i, options in enumerate(stream, start=1):
            used = used_by_day.setdefault(options.order.placed_at.date(), {})
            plan, ms = policy_plan(options, policy, view, stock, used)
            result.decide_ms.append(ms)
            _record(result, options, plan, stock)
            _progress(progress, name, i, len(stream))
        results.append(result)
    ranked = _ranked_list(network)
    baselines: tuple[tuple[str, Callable[[OrderOptions], list[str]]], ...] = (
        ("closest-node-with-stock", _closest),
        ("ranked-locations", ranked),
    )
    for name, ranking in baselines:
        result = StrategyResult(name, "baseline")
        stock = dict(start_stock)
        for options in stream:
            started = time.perf_counter_ns()
            plan = _static_plan(options, stock, ranking(options))
            result.decide_ms.append((time.perf_counter_ns() - started) / 1e6)
            _record(result, options, plan, stock)
        results.append(result)
    best = None
    if optimum or (optimum is None and len(orders) <= OPTIMUM_MAX_ORDERS):
        if progress is not None:
            print(
                f"  solving the offline optimum of {len(orders)} orders with HiGHS...",
                file=progress,
                flush=True,
            )
        best = solve_optimum(stream, start_stock)
    return SimulationResult(results, best, policies[0].version, len(orders), seed)


def _progress(out: TextIO | None, name: str, i: int, total: int) -> None:
    step = max(1, total // 10)
    if out is not None and total >= 200 and (i % step == 0 or i == total):
        print(f"  {name}: {i}/{total} orders", file=out, flush=True)


def format_table(result: SimulationResult) -> str:
    """The comparison as a markdown table."""
    head = (
        "| strategy | objective | shipping cost | shipments/order | split rate | promise hit | "
        "mean km | back-order rate | ms/order | gap to optimum |"
    )
    rows = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for strategy in result.strategies:
        s = strategy.summary(result.optimum)
        gap = s["gap_to_optimum"]
        rows.append(
            f"| {s['name']} | {s['objective']:.2f} | {s['shipping_cost']:.2f} | "
            f"{s['shipments_per_order']:.2f} | "
            f"{s['split_rate']:.1%} | {s['promise_hit_rate']:.1%} | {s['mean_distance_km']:.1f} | "
            f"{s['backorder_rate']:.1%} | {s['decide_ms_per_order']:.2f} | "
            f"{_gap(gap)} |"
        )
    if result.optimum is not None:
        opt = result.optimum
        proven = "proven optimal" if opt.optimal else f"lower bound {opt.lower_bound:.2f}"
        rows.append(f"| offline optimum (HiGHS) | {opt.objective:.2f} | | | | | | | | {proven} |")
    return "\n".join(rows)


def _gap(gap: object) -> str:
    if not isinstance(gap, float):
        return "-"
    # Rounding noise of the solver must not print as "-0.0%".
    return f"{max(gap, 0.0) if abs(gap) < 5e-4 else gap:+.1%}"


def write_outputs(result: SimulationResult, out: Path) -> tuple[Path, Path]:
    """`simulate.json` and `simulate.png` (cost and split rate per strategy) in `out`."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server or in CI
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    data = result.to_json()
    json_path = out / "simulate.json"
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    summaries = [s.summary(result.optimum) for s in result.strategies]
    names = [str(s["name"]) for s in summaries]
    colours = ["tab:blue" if s["kind"] == "policy" else "tab:grey" for s in summaries]
    fig, (cost_ax, split_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    cost_ax.bar(names, [float(str(s["objective"])) for s in summaries], color=colours)
    if result.optimum is not None:
        cost_ax.axhline(result.optimum.objective, color="tab:green", linestyle="--", label="offline optimum")
        cost_ax.legend()
    cost_ax.set_title(f"Total cost ({result.orders} orders, objective of {result.reference_policy})")
    split_ax.bar(names, [100 * float(str(s["split_rate"])) for s in summaries], color=colours)
    split_ax.set_title("Split rate (% of planned orders)")
    for ax in (cost_ax, split_ax):
        ax.tick_params(axis="x", rotation=25)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    fig.tight_layout()
    png_path = out / "simulate.png"
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return json_path, png_path


def run_simulation(
    network: SimNetwork,
    orders: Sequence[OrderCreated],
    policies: Sequence[Policy],
    *,
    seed: int,
    out: Path,
    stream: TextIO | None = None,
) -> SimulationResult:
    """Simulate, print the table and write the files: what `orchestrator simulate` does."""
    stream = stream or sys.stdout  # read at call time: a redirected stdout must be honoured
    result = simulate(network, orders, policies, seed=seed, progress=sys.stderr)
    print(format_table(result), file=stream)
    json_path, png_path = write_outputs(result, out)
    print(f"\nwrote {json_path} and {png_path}", file=stream)
    return result


__all__ = [
    "OPTIMUM_MAX_ORDERS",
    "SimulationResult",
    "StrategyResult",
    "format_table",
    "run_simulation",
    "simulate",
    "write_outputs",
]
