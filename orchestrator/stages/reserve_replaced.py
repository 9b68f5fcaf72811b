"""reserve: undoing a repair whose failing work shipped after all.

A playbook that moves work off a node (it refused, closed, did not acknowledge, missed its
cut-off) asks the node to cancel it. A node may ship it anyway, the cancel request arriving too
late. When the shipment reaches reserve before the repair, the repair is dropped (see
`reserve.superseded`). When the repair was held first, its lines are now on their way twice: the
repair is undone here. Its new shipments that have not left are given back whole, so release
cancels their work orders; its lines that waited for stock stop waiting. A new shipment that has
left already cannot be called back: the line has shipped twice, and that is logged.

A whole plan of the order (an amendment's re-plan, a re-decide) that gave back work a node then
ships is undone the same way, by what the order holds now: any shipment not yet gone whose every
unit the late parcel carried is given back, as are waiting lines it carried in full. The work
held now may be the re-plan's, or a later plan's or repair's that moved the lines again. What
the late parcel covers in part (an amendment that raised a quantity) still ships.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
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
    #: A whole plan of the order replaced the work, not a repair.
    whole: bool = False


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


def sends_a_parcel_again(repair: Repair) -> bool:
    """A repair of a parcel that went wrong after it left (lost, damaged): its units never arrive.

    As the playbooks make them: the failing work order is to be cancelled (a short pick's is not:
    what was picked ships) and the repair stands once the shipment has left (a stop's does not).
    """
    return (
        repair.replaces_shipment_id is not None and repair.cancel_replaced and not repair.dropped_if_shipped
    )


async def remember_resent(conn: asyncpg.Connection, plan: PlanDecided, repair: Repair) -> None:
    """Keep the units of a parcel a held repair sends again: a whole re-plan must not count them
    as delivered."""
    if not sends_a_parcel_again(repair):
        return
    await conn.executemany(
        "INSERT INTO reserve_resent (shipment_id, line_id, order_id, units, plan_id)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        [
            (repair.replaces_shipment_id, line.line_id, plan.order_id, line.quantity, plan.plan_id)
            for line in repair.lines
        ],
    )


async def units_left(conn: asyncpg.Connection, order_id: str) -> dict[str, int]:
    """The units of each of the order's lines that have left a node and were not sent again."""
    rows = await conn.fetch(
        "SELECT r.line_id, sum(GREATEST(r.consumed - COALESCE(s.units, 0), 0))::int AS units"
        " FROM reserve_reservations r LEFT JOIN reserve_resent s"
        " ON s.shipment_id = r.shipment_id AND s.line_id = r.line_id"
        " WHERE r.order_id = $1 AND r.consumed > 0 GROUP BY r.line_id",
        order_id,
    )
    return {r["line_id"]: r["units"] for r in rows if r["units"] > 0}


async def remember_replanned(
    conn: asyncpg.Connection, plan: PlanDecided, given_back: Sequence[asyncpg.Record], now: datetime
) -> None:
    """Keep the shipments a whole plan of the order gave back, so that one shipping after all undoes
    what the order holds for the same lines then."""
    if not given_back:
        return  # the order's first plan, or nothing held: no round trip
    lines: dict[str, set[str]] = defaultdict(set)
    for r in given_back:
        lines[r["shipment_id"]].add(r["line_id"])
    await conn.executemany(
        "INSERT INTO reserve_replaced (shipment_id, plan_id, order_id, sequence, line_ids, shipment_ids,"
        " held_at, whole) VALUES ($1, $2, $3, $4, $5, $6, $7, true) ON CONFLICT DO NOTHING",
        [
            (
                shipment_id,
                plan.plan_id,
                plan.order_id,
                plan.sequence,
                sorted(line_ids),
                [shipment.shipment_id for shipment in plan.shipments],
                now,
            )
            for shipment_id, line_ids in sorted(lines.items())
        ],
    )


async def undo_replacements(conn: asyncpg.Connection, shipped: WorkOrderShipped) -> list[UndoneRepair]:
    """The shipment left after repairs or whole plans had replaced it: undo each, for the lines it
    carried."""
    rows = await conn.fetch(
        "UPDATE reserve_replaced SET undone_at = $2 WHERE shipment_id = $1 AND undone_at IS NULL"
        " RETURNING plan_id, order_id, sequence, line_ids, shipment_ids, whole",
        shipped.shipment_id,
        shipped.occurred_at,
    )
    carried = {line.line_id for line in shipped.lines}
    undone: list[UndoneRepair] = []
    for row in sorted(rows, key=lambda r: r["plan_id"]):
        lines = sorted(carried.intersection(row["line_ids"]))
        if not lines:
            continue
        if row["whole"]:
            units = Counter({x.line_id: x.quantity for x in shipped.lines if x.line_id in lines})
            undone.append(await _undo_whole(conn, row, units))
        else:
            undone.append(await _undo(conn, row, lines))
    return undone


async def _undo_whole(
    conn: asyncpg.Connection, replaced: asyncpg.Record, carried: Counter[str]
) -> UndoneRepair:
    """What the order holds or waits for that the late parcel carried in full goes back."""
    by_shipment = await _reservations_by_shipment(
        conn,
        "shipment_id IN (SELECT shipment_id FROM reserve_reservations"
        " WHERE order_id = $1 AND status = 'active')",
        replaced["order_id"],
    )
    given_back: list[str] = []
    for shipment_id, reservations in by_shipment:
        if any(r["consumed"] > 0 for r in reservations):
            continue  # it left: the lines went twice, nothing to call back
        needs = Counter({r["line_id"]: r["quantity"] for r in reservations if r["status"] == "active"})
        if all(carried[line] >= units for line, units in needs.items()):
            carried -= needs
            given_back.append(shipment_id)
    await give_back_shipments(conn, given_back)
    waiting = await conn.fetch(
        "SELECT line_id, quantity FROM reserve_waiting WHERE order_id = $1 AND line_id = ANY($2::text[])"
        " ORDER BY line_id FOR UPDATE",
        replaced["order_id"],
        sorted(carried),
    )
    covered = [r["line_id"] for r in waiting if carried[r["line_id"]] >= r["quantity"]]
    gone = await conn.fetch(
        "DELETE FROM reserve_waiting WHERE order_id = $1 AND line_id = ANY($2::text[]) RETURNING sku",
        replaced["order_id"],
        covered,
    )
    return UndoneRepair(
        plan_id=replaced["plan_id"],
        given_back=tuple(given_back),
        shipped_too=(),
        unqueued=frozenset(r["sku"] for r in gone),
        whole=True,
    )


async def _undo(conn: asyncpg.Connection, replaced: asyncpg.Record, lines: list[str]) -> UndoneRepair:
    by_shipment = await _reservations_by_shipment(
        conn, "shipment_id = ANY($1::text[])", replaced["shipment_ids"]
    )
    given_back: list[str] = []
    shipped_too: list[str] = []
    for shipment_id, reservations in by_shipment:
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


async def _reservations_by_shipment(
    conn: asyncpg.Connection, which: str, key: object
) -> list[tuple[str, list[asyncpg.Record]]]:
    """The reservations of the shipments `which` picks, locked in the ledger's order, by shipment."""
    rows = await conn.fetch(
        "SELECT shipment_id, line_id, quantity, status, consumed FROM reserve_reservations"
        f" WHERE {which} ORDER BY reservation_id FOR UPDATE",
        key,
    )
    by_shipment: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for r in rows:
        by_shipment[r["shipment_id"]].append(r)
    return sorted(by_shipment.items())


__all__ = [
    "UndoneRepair",
    "remember_replaced",
    "remember_replanned",
    "remember_resent",
    "sends_a_parcel_again",
    "undo_replacements",
    "units_left",
]
