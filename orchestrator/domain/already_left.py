"""A whole re-plan holds only what has not left a node yet.

An amendment (or a re-decide) plans the whole order again from the order as it stands. decide-node
does not know what the nodes have shipped meanwhile: the old work order may have left while the
amendment travelled through validate and decide-node, and the cancel request the re-plan brings
arrives at the node too late. Planned again, those units would ship twice. reserve knows: it
reads the shipments and the plans of an order from one partition, so when the plan comes it
knows every unit of the order that has left. It holds the plan less those units.

A unit that left and was then lost in transit is not "left" for this purpose once a playbook has
sent it again: the re-send is the order's to keep (see `reserve.superseded`), and a re-plan that
gave the re-send back must plan its units once more.

Pure: `plan_what_has_not_left` takes the plan and the units per line that have left.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from orchestrator.contract.common import SkuLine
from orchestrator.contract.pipeline import PlanDecided, PlannedShipment


@dataclass(frozen=True, slots=True)
class Remaining:
    """The plan to hold, and the units of each line it leaves out because they have left."""

    plan: PlanDecided
    left_out: Mapping[str, int] = field(default_factory=dict)

    @property
    def units_left_out(self) -> int:
        return sum(self.left_out.values())


def _take(lines: tuple[SkuLine, ...], owed: Counter[str], out: Counter[str]) -> tuple[SkuLine, ...]:
    """The lines less what is still owed to the units that left (taken from `owed` as it goes)."""
    kept: list[SkuLine] = []
    for line in lines:
        taken = min(owed[line.line_id], line.quantity)
        if taken:
            owed[line.line_id] -= taken
            out[line.line_id] += taken
        if line.quantity > taken:
            kept.append(line if not taken else line.model_copy(update={"quantity": line.quantity - taken}))
    return tuple(kept)


def plan_what_has_not_left(plan: PlanDecided, left: Mapping[str, int]) -> Remaining:
    """The whole plan less the units of each line that have left a node already.

    Waiting units go first (what is held ships sooner than what waits for stock), then shipments
    from the last: the plan's first shipments are its cheapest or fastest, so they are kept whole
    as long as they can be. A shipment left with no line is dropped.
    """
    if plan.repair is not None:
        raise ValueError("a repair plans only the lines it repairs: there is nothing of it to leave out")
    owed = Counter({line_id: units for line_id, units in left.items() if units > 0})
    if not owed:
        return Remaining(plan)
    out: Counter[str] = Counter()
    backordered = _take(plan.backordered, owed, out)
    kept: list[PlannedShipment] = []
    for shipment in reversed(plan.shipments):
        lines = _take(shipment.lines, owed, out)
        if lines:
            kept.append(shipment if lines == shipment.lines else shipment.model_copy(update={"lines": lines}))
    if not out:
        return Remaining(plan)
    said = tuple(
        f"{units} unit(s) of line {line_id} had already left a node: they are not planned again."
        for line_id, units in sorted(out.items())
    )
    trimmed = plan.model_copy(
        update={
            "shipments": tuple(reversed(kept)),
            "backordered": backordered,
            "explanation": plan.explanation + said,
        }
    )
    return Remaining(trimmed, dict(out))


__all__ = ["Remaining", "plan_what_has_not_left"]
