"""`orchestrator explain ORDER_ID`: a plan written out for a person.

Everything comes from the recorded `PlanDecided` (outcome, shipments,
candidates with their reasons, the decision's own sentences), so the text
explains the decision as it was made, under the policy version it names.
"""

from __future__ import annotations

from collections.abc import Iterable

from orchestrator.contract.common import SkuLine
from orchestrator.contract.pipeline import CandidateVerdict, PlanDecided, PlannedShipment, PlanOutcome
from orchestrator.domain.sourcing import TIMES

_OUTCOMES: dict[PlanOutcome, str] = {
    PlanOutcome.SHIP: "every line is planned",
    PlanOutcome.PARTIAL: "some lines ship now, the rest is back-ordered",
    PlanOutcome.BACKORDER: "nothing can ship now; the order waits for stock",
    PlanOutcome.HOLD_FOR_STOCK: "held until the whole order can ship",
    PlanOutcome.UNFULFILLABLE: "some line can never be served; the order needs attention",
}
#: Nodes rejected only for want of stock are listed one per line up to this many; beyond, on one line.
_NO_STOCK_LISTED = 5
_INDENT = "  "


def _lines(lines: Iterable[SkuLine]) -> str:
    return ", ".join(f"{line.line_id} {line.sku} {TIMES}{line.quantity}" for line in lines)


def _shipment(index: int, shipment: PlannedShipment, currency: str) -> list[str]:
    carrier = shipment.carrier
    ship_by = shipment.ship_by.strftime("%Y-%m-%d %H:%M %Z")
    return [
        f"{_INDENT}{index}. {shipment.node_id} ({shipment.shipment_id})",
        f"{_INDENT * 3}lines: {_lines(shipment.lines)}",
        f"{_INDENT * 3}carrier: {carrier.carrier} / {carrier.service_id} ({shipment.service_level.value}),"
        f" ship by {ship_by}, arriving {shipment.promised_delivery_date.isoformat()}",
        f"{_INDENT * 3}distance {shipment.distance_km:.1f} km, shipping {shipment.shipping_cost} {currency},"
        f" cost {shipment.cost:.2f}",
    ]


def _only_short_of_stock(candidate: CandidateVerdict) -> bool:
    return not candidate.eligible and all(reason.code == "no_stock" for reason in candidate.reasons)


def _candidate(candidate: CandidateVerdict, used: set[str]) -> list[str]:
    served = ", ".join(candidate.lines) if candidate.lines else "none"
    head = f"{_INDENT * 2}{candidate.node_id}: lines {served}"
    if candidate.best_cost is not None:
        head += f", alone {candidate.best_cost:.2f}"
    if candidate.node_id in used:
        head += " (used)"
    return [head] + [f"{_INDENT * 3}{reason.code}: {reason.message}" for reason in candidate.reasons]


def _candidates(plan: PlanDecided) -> list[str]:
    used = {shipment.node_id for shipment in plan.shipments}
    eligible = [c for c in plan.candidates if c.eligible]
    rejected = [c for c in plan.candidates if not c.eligible]
    no_stock = [c for c in rejected if _only_short_of_stock(c)]
    if len(no_stock) > _NO_STOCK_LISTED:
        rejected = [c for c in rejected if not _only_short_of_stock(c)]
    out = [f"Candidates ({len(plan.candidates)} considered):"]
    if eligible:
        out.append(f"{_INDENT}eligible:")
        for candidate in eligible:
            out += _candidate(candidate, used)
    if rejected:
        out.append(f"{_INDENT}rejected:")
        for candidate in rejected:
            out += _candidate(candidate, used)
    if len(no_stock) > _NO_STOCK_LISTED:
        names = ", ".join(c.node_id for c in no_stock)
        out.append(f"{_INDENT}rejected for no stock ({len(no_stock)} nodes): {names}")
    return out


def explain_plan(plan: PlanDecided) -> str:
    """The plan as text: outcome, shipments, cost and policy, the reasons, then every candidate."""
    currency = plan.order.currency
    out = [
        f"Order {plan.order_id}, plan {plan.plan_id} (version {plan.plan_version}, attempt {plan.attempt}),"
        f" decided {plan.decided_at.isoformat()} under policy {plan.policy_version}",
        f"Outcome: {plan.outcome.value}: {_OUTCOMES.get(plan.outcome, plan.outcome.value)}",
    ]
    if plan.excluded_nodes:
        out.append(f"Excluded by re-decide: {', '.join(plan.excluded_nodes)}")
    if plan.shipments:
        out.append("")
        out.append(f"Shipments ({len(plan.shipments)}):")
        for index, shipment in enumerate(plan.shipments, start=1):
            out += _shipment(index, shipment, currency)
    if plan.backordered:
        out.append(f"Back-ordered: {_lines(plan.backordered)}")
    if plan.shipments:
        out.append(f"Total cost {plan.total_cost:.2f} under policy {plan.policy_version}")
    if plan.explanation:
        out.append("")
        out.append("Why:")
        out += [f"{_INDENT}- {sentence}" for sentence in plan.explanation]
    if plan.candidates:
        out.append("")
        out += _candidates(plan)
    return "\n".join(out)


__all__ = ["explain_plan"]
