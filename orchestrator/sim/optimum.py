"""The offline optimum of a whole order stream, as a MIP solved by HiGHS.

With hindsight over every order at once: which node ships how many units of
each line, under the stock of the whole stream. The objective is the
yardstick's (`orchestrator.sim.costing`): per opened (order, node) shipment
its handling cost plus the cheapest eligible carrier service (fixed part
and per-kg part, the service chosen by the solver among those that carry
every line's handling class), `split_cost` per extra shipment of an order,
and a penalty per back-ordered unit. Ship-complete orders ship from one
node, all or nothing, as the engine plans them. Optionally, as the policies
compared must: at most `max_shipments` shipments an order, and only the
(node, line) pairs `allowed` (the policies' channel and tier rules). Not
modelled: node capacity (a relaxation: the optimum stays a lower bound of
every policy that keeps those rules).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import highspy
import numpy as np

from orchestrator.sim.costing import BACKORDER_PENALTY_PER_UNIT, OrderOptions

_INF = highspy.kHighsInf


@dataclass(frozen=True, slots=True)
class Optimum:
    """The best objective found, the solver's proven lower bound and whether it is proven optimal;
    and the units the best plan found leaves back-ordered."""

    objective: float
    lower_bound: float
    optimal: bool
    seconds: float
    backordered_units: int = 0


class _Model:
    def __init__(self) -> None:
        self.h = highspy.Highs()  # type: ignore[no-untyped-call]
        self.h.setOptionValue("output_flag", False)
        self.count = 0
        self.integers: list[int] = []

    def var(self, cost: float, upper: float, integer: bool = False) -> int:
        self.h.addCol(cost, 0.0, upper, 0, np.array([], dtype=np.int32), np.array([], dtype=np.float64))
        if integer:
            self.integers.append(self.count)
        self.count += 1
        return self.count - 1

    def row(self, lower: float, upper: float, terms: Sequence[tuple[int, float]]) -> None:
        index = np.array([i for i, _ in terms], dtype=np.int32)
        value = np.array([v for _, v in terms], dtype=np.float64)
        self.h.addRow(lower, upper, len(terms), index, value)


def _rates(options: OrderOptions, node_id: str) -> list[tuple[float, float, int]]:
    """(fixed, per kg, handled bits) of the node's services, less those another beats on every count."""
    cand = options.nodes[node_id]
    rates = [(r.fixed, r.per_kg, r.handles) for r in cand.rates[0]]
    kept = []
    for i, (fixed, per_kg, handles) in enumerate(rates):
        dominated = any(
            (f <= fixed and p <= per_kg and not handles & ~h)
            and ((f, p, h) != (fixed, per_kg, handles) or j < i)
            for j, (f, p, h) in enumerate(rates)
            if j != i
        )
        if not dominated:
            kept.append((fixed, per_kg, handles))
    return kept


def solve_optimum(
    stream: Sequence[OrderOptions],
    stock: Mapping[tuple[str, str], int],
    *,
    time_limit_s: float = 60.0,
    rel_gap: float = 1e-7,
    max_shipments: int | None = None,
    allowed: Sequence[Mapping[str, Collection[int]]] | None = None,
) -> Optimum:
    """The offline optimum of the yardstick over the whole stream, from the starting `stock`.

    `max_shipments` caps the shipments of an order that may split; `allowed`, one mapping per
    order of `stream`, the line positions each node may ship (None: all the yardstick's options).

    The solver stops at `time_limit_s` or once its best plan is proven within `rel_gap` of the lower
    bound; `Optimum` then holds both (a longer stream may stop at the limit, not proven optimal).
    """
    m = _Model()
    offset = 0.0
    usage: dict[tuple[str, str], list[int]] = {}
    backs: list[int] = []
    unplaceable = 0
    if allowed is not None and len(allowed) != len(stream):
        raise ValueError(f"allowed has {len(allowed)} entries for {len(stream)} orders")
    for k, options in enumerate(stream):
        lines = options.lines
        permitted = None if allowed is None else allowed[k]
        if not options.nodes:
            unplaceable += sum(line.quantity for line in lines)
            offset += BACKORDER_PENALTY_PER_UNIT * sum(line.quantity for line in lines)
            continue
        x: dict[tuple[int, str], int] = {}
        for line in lines:
            for node_id, cand in sorted(options.nodes.items()):
                upper = min(line.quantity, stock.get((node_id, line.sku), 0))
                if permitted is not None and line.pos not in permitted.get(node_id, ()):
                    continue
                if line.pos in cand.serves and upper > 0:
                    x[(line.pos, node_id)] = m.var(0.0, upper, integer=True)
                    usage.setdefault((node_id, line.sku), []).append(x[(line.pos, node_id)])
        held = m.var(0.0, 1.0, integer=True) if options.order.ship_complete else None
        for line in lines:
            back = m.var(BACKORDER_PENALTY_PER_UNIT, line.quantity)
            backs.append(back)
            mine = [(x[(line.pos, n)], 1.0) for n in options.nodes if (line.pos, n) in x]
            m.row(line.quantity, line.quantity, [*mine, (back, 1.0)])
            if held is not None:
                m.row(0.0, 0.0, [(back, 1.0), (held, -float(line.quantity))])
        opened = []
        for node_id in sorted(options.nodes):
            here = [(pos, x[(pos, n)]) for (pos, n) in x if n == node_id]
            if not here:
                continue
            cand = options.nodes[node_id]
            y = m.var(cand.fixed, 1.0, integer=True)
            opened.append(y)
            heaviest = sum(lines[pos].unit_weight * lines[pos].quantity for pos, _ in here)
            choice, carried = [], []
            for fixed, per_kg, handles in _rates(options, node_id):
                z = m.var(fixed, 1.0, integer=True)
                w = m.var(per_kg, heaviest)
                choice.append((z, handles))
                carried.append((w, 1.0))
                m.row(-_INF, 0.0, [(w, 1.0), (z, -heaviest)])
            # One service per shipment, carrying the shipment's whole weight.
            m.row(0.0, 0.0, [*((z, 1.0) for z, _ in choice), (y, -1.0)])
            m.row(0.0, 0.0, [*carried, *((var, -lines[pos].unit_weight) for pos, var in here)])
            for pos, var in here:
                line = lines[pos]
                able = [(z, -float(line.quantity)) for z, handles in choice if not line.mask & ~handles]
                m.row(-_INF, 0.0, [(var, 1.0), *able])
        split = m.var(options.split_cost, _INF)
        m.row(-_INF, 1.0, [*((y, 1.0) for y in opened), (split, -1.0)])
        if held is not None:
            m.row(-_INF, 1.0, [(y, 1.0) for y in opened])
        elif max_shipments is not None:
            m.row(-_INF, float(max_shipments), [(y, 1.0) for y in opened])
    for (node_id, sku), variables in usage.items():
        m.row(-_INF, float(stock.get((node_id, sku), 0)), [(v, 1.0) for v in variables])
    if m.integers:
        kinds = np.full(len(m.integers), highspy.HighsVarType.kInteger.value, dtype=np.uint8)
        m.h.changeColsIntegrality(len(m.integers), np.array(m.integers, dtype=np.int32), kinds)
    m.h.setOptionValue("mip_rel_gap", float(rel_gap))
    m.h.setOptionValue("time_limit", float(time_limit_s))
    m.h.run()
    info = m.h.getInfo()
    status = m.h.getModelStatus()
    optimal = status == highspy.HighsModelStatus.kOptimal
    if m.count == 0:
        return Optimum(offset, offset, True, 0.0, unplaceable)
    if info.primal_solution_status == 0:
        raise RuntimeError(f"HiGHS found no solution: {m.h.modelStatusToString(status)}")
    bound = info.mip_dual_bound if info.mip_dual_bound > -_INF else info.objective_function_value
    return Optimum(
        objective=info.objective_function_value + offset,
        lower_bound=bound + offset,
        optimal=optimal,
        seconds=m.h.getRunTime(),
        backordered_units=unplaceable + round(sum(m.h.getSolution().col_value[i] for i in backs)),
    )


__all__ = ["Optimum", "solve_optimum"]
