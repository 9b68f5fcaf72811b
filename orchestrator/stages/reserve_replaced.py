"""reserve: undoing a repair whose failing work shipped after all.

A playbook that moves work off a node (it refused, closed, did not acknowledge, missed its
cut-off) asks the node to cancel it. A node may ship it anyway, the cancel request arriving too
late. When the shipment reaches reserve before the repair, the repair is dropped (see
`reserve.superseded`). When the repair was held first, its lines are now on their way twice: the
repair is undone here. Its new shipments that have not left are given back whole, so release
cancels their work orders; its lines that waited for stock stop waiting. A new shipment that has
left already cannot be called back: the line has shipped twice, and that is logged.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from orchestrator.contract.execution import WorkOrderShipped
from orchestrator.contract.pipeline import PlanDecided, Repair
from orchestrator.stages.reserve_giveback import give_back_shipments


@dataclass(frozen=True, slots=True)
class UndoneRepair:
    """What undoing one repair did, for the stage to tell release, the queues and the log."""

    plan_id: str
    #: The repair's shipments given back whole: their work orders are to be cancelled.
    given_back: tuple[str, ...]
    #: Its shipments that had left already: their lines shipped twice.
    shipped_too: tuple[str, ...]
    #: SKUs whose queue lost the repair's waiting lines.
    unqueued: frozenset[str]


async def remember_replaced(
    conn: asyncpg.Connection, plan: PlanDecided, repair: Repair, now: datetime
) -> None:
    """Keep a held repair of work the node was asked to stop, so it can be undone if that work ships."""
    if not repair.dropped_if_shipped or repair.replaces_shipment_id is None:
        return
    await conn.execute(
        "INSERT INTO reserve_replaced (shipment_id, plan_id, order_id, sequence, line_ids, shipment_ids,"
        " held_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        repair.replaces_shipment_id,
        plan.plan_id,
        plan.order_id,
        plan.sequence,
        [line.line_id for line in repair.lines],
        [shipment.shipment_id for shipment in plan.shipments],
        now,
    )


async def undo_replacements(conn: asyncpg.Connection, shipped: WorkOrderShipped) -> list[UndoneRepair]:
    """The shipment left after repairs had replaced it: undo each, for the lines it carried."""
    rows = await conn.fetch(
        "UPDATE reserve_replaced SET undone_at = $2 WHERE shipment_id = $1 AND undone_at IS NULL"
        " RETURNING plan_id, order_id, sequence, line_ids, shipment_ids",
        shipped.shipment_id,
        shipped.occurred_at,
    )
    carried = {line.line_id for line in shipped.lines}
    undone: list[UndoneRepair] = []
    for row in sorted(rows, key=lambda r: r["plan_id"]):
        lines = sorted(carried.intersection(row["line_ids"]))
        if lines:
            undone.append(await _undo(conn, row, lines))
    return undone


async def _undo(conn: asyncpg.Connection, replaced: asyncpg.Record, lines: list[str]) -> UndoneRepair:
    held = await conn.fetch(
        "SELECT reservation_id, shipment_id, line_id, status, consumed FROM reserve_reservations"
        " WHERE shipment_id = ANY($1::text[]) ORDER BY reservation_id FOR UPDATE",
        replaced["shipment_ids"],
    )
    by_shipment: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for r in held:
        by_shipment[r["shipment_id"]].append(r)
    given_back: list[str] = []
    shipped_too: list[str] = []
    for shipment_id, reservations in sorted(by_shipment.items()):
        if any(r["consumed"] > 0 for r in reservations):
            shipped_too.append(shipment_id)
        elif any(r["status"] == "active" for r in reservations) and {
            r["line_id"] for r in reservations
        } <= set(lines):
            # A shipment that also carries lines the late one did not is left to ship: cancelling
            # it would lose those.
            given_back.append(shipment_id)
    await give_back_shipments(conn, given_back)
    gone = await conn.fetch(
        "DELETE FROM reserve_waiting WHERE order_id = $1 AND line_id = ANY($2::text[]) AND sequence = $3"
        " RETURNING sku",
        replaced["order_id"],
        lines,
        replaced["sequence"],
    )
    return UndoneRepair(
        plan_id=replaced["plan_id"],
        given_back=tuple(given_back),
        shipped_too=tuple(shipped_too),
        unqueued=frozenset(r["sku"] for r in gone),
    )


__all__ = ["UndoneRepair", "remember_replaced", "undo_replacements"]
