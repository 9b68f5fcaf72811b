"""reserve: the inventory ledger, and the atomic check that stock is really there.

Reads plans and `inventory.updates.v1`, and observes `wms.events.v1` for
shipments and `network.updates.v1` for nodes that open (a node added, or
reopened, may hold what back-ordered lines wait for). Decides: whether every
line allocation of a plan can be reserved at its node now. Each allocation is
one conditional UPDATE (`on_hand - reserved - safety_stock >= quantity`), so two
orders racing for the last unit cannot both win: the loser's whole plan is
rolled back (a savepoint) and sent back to decide-node as a re-decide with
fresh stock. Never an oversell. Cancellations and re-plans give reservations
back; inventory snapshots and deltas change on-hand without touching what is
reserved. A shipment leaving its node consumes its reservations: the units
are off reserved and off on-hand, and `reservation.consumed.v1` tells the
ledgers that follow this one (see `orchestrator.domain.stock_counts`). A work
order ships once: what its shipment held and did not take (picked short) is
given back then, whatever the playbook does with the missing units.

Owns `reserve_ledger`, `reserve_reservations`, `reserve_shipped`, `reserve_node_load`, `reserve_orders`,
`reserve_closed_nodes`, `reserve_replaced`, `reserve_resent` (see `reserve_replaced`).

Counts every plan it tries to hold stock for, by result (confirmed, lost_race, superseded), once
the batch commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

import asyncpg

from orchestrator.contract.common import OrderState, Reason, SkuLine
from orchestrator.contract.envelope import Envelope
from orchestrator.contract.execution import WorkOrderShipped
from orchestrator.contract.inventory import InboundSupplyExpected, InventoryDelta, InventorySnapshot
from orchestrator.contract.network import NodeStatusChanged, NodeUpserted
from orchestrator.contract.pipeline import (
    PlanCancelled,
    PlanDecided,
    QueueOwed,
    RedecideRequested,
    Repair,
    RepairOutcome,
    ReservationConfirmed,
    ReservationsConsumed,
    ReservationsReleased,
    ReservedShipment,
    SupplyReleaseDue,
)
from orchestrator.domain.already_left import plan_what_has_not_left
from orchestrator.domain.stock_counts import INT4_MAX, Counted, Shipped, consume, fold_changes
from orchestrator.domain.supply import RELEASE_WAITING, PreorderRelease, from_queue
from orchestrator.runtime.measures import StageMeasures
from orchestrator.runtime.metrics import RuntimeMetrics
from orchestrator.runtime.stage import HandlerContext, RejectEvent, Stage
from orchestrator.stages.common import (
    EXCEPTIONS,
    INVENTORY_UPDATES,
    NETWORK_UPDATES,
    PLANS,
    QUEUES,
    REROUTES,
    RESERVATIONS,
    STATUS,
    SUPPLY,
    WMS_EVENTS,
    emit_status,
)
from orchestrator.stages.reserve_giveback import give_back_order, give_back_slots
from orchestrator.stages.reserve_replaced import (
    remember_replaced,
    remember_replanned,
    remember_resent,
    sends_a_parcel_again,
    undo_replacements,
    units_left,
)
from orchestrator.stages.reserve_supply import (
    CUSTOMER_NOTIFICATIONS,
    SupplyTicker,
    forget_order,
    record_inbound,
    record_plan,
    refresh_dates,
    release_ready,
    take_rechecks,
)

#: Advisory lock key of the ledger's writers (any constant unique in the database).
LEDGER_LOCK = 0x5245_5345_5256_45  # "RESERVE"

#: The `result` label of `orchestrator_reservations_total`.
CONFIRMED, LOST_RACE, SUPERSEDED = "confirmed", "lost_race", "superseded"
#: A held repair, or what a whole re-plan held, given back because the work replaced shipped after all.
UNDONE = "undone"
#: The `plan` label: a plan of the whole order, or a repair's partial plan.
WHOLE, REPAIR = "whole", "repair"


def _prepare_metrics(m: RuntimeMetrics) -> None:
    for result in (CONFIRMED, LOST_RACE, SUPERSEDED, UNDONE):
        for plan in (WHOLE, REPAIR):
            m.reservations.labels(result, plan)


class _LostRace(Exception):
    """The plan asks more than is there now: stock at a node, or a node's shipments for the day."""


async def reserve_plan(conn: asyncpg.Connection, plan: PlanDecided) -> list[ReservedShipment]:
    """Reserve every allocation of the plan, or raise _LostRace (the caller's savepoint undoes the rest).

    Three round trips whatever the plan's size: one conditional update of every (node, SKU) the
    plan draws on (lines of one SKU at one node are summed, so they are checked together, as one
    after the other would be), then the reservations and the nodes' shipment counts (each node's
    day within the capacity the shipment was decided with: decisions made side by side from the
    same count cannot all take a node's last slot).
    """
    wanted: dict[tuple[str, str], int] = {}
    for shipment in plan.shipments:
        for line in shipment.lines:
            key = (shipment.node_id, line.sku)
            wanted[key] = wanted.get(key, 0) + line.quantity
    if not wanted:
        return []
    pairs = sorted(wanted)
    rows = await conn.fetch(
        "UPDATE reserve_ledger AS l SET reserved = l.reserved + w.quantity, updated_at = now()"
        " FROM unnest($1::text[], $2::text[], $3::int[]) AS w(node_id, sku, quantity)"
        " WHERE l.node_id = w.node_id AND l.sku = w.sku"
        " AND l.on_hand - l.reserved - l.safety_stock >= w.quantity RETURNING l.node_id, l.sku",
        [n for n, _ in pairs],
        [s for _, s in pairs],
        [wanted[p] for p in pairs],
    )
    got = {(r["node_id"], r["sku"]) for r in rows}
    for node_id, sku in pairs:
        if (node_id, sku) not in got:
            raise _LostRace(f"{wanted[(node_id, sku)]} x {sku} no longer available at {node_id}")
    reserved: list[ReservedShipment] = []
    reservations: list[tuple[object, ...]] = []
    for shipment in plan.shipments:
        ids = [f"{shipment.shipment_id}-{line.line_id}" for line in shipment.lines]
        reservations += [
            (
                rid,
                plan.order_id,
                plan.plan_id,
                shipment.shipment_id,
                line.line_id,
                shipment.node_id,
                line.sku,
                line.quantity,
                plan.node_day(shipment)[1],
            )
            for rid, line in zip(ids, shipment.lines, strict=True)
        ]
        reserved.append(ReservedShipment(shipment=shipment, reservation_ids=tuple(ids)))
    await conn.executemany(
        "INSERT INTO reserve_reservations (reservation_id, order_id, plan_id, shipment_id, line_id,"
        " node_id, sku, quantity, status, capacity_day)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active', $9)",
        reservations,
    )
    await count_shipments(conn, plan)
    return reserved


async def count_shipments(conn: asyncpg.Connection, plan: PlanDecided) -> None:
    """Each shipment counts toward its node's day; raise _LostRace when that takes a node past the
    capacity the plan was decided with (the caller's savepoint takes the counts back)."""
    counts: dict[tuple[str, date], int] = {}
    capacity: dict[tuple[str, date], int] = {}
    for shipment in plan.shipments:
        key = plan.node_day(shipment)
        if shipment.capacity is not None:
            capacity[key] = shipment.capacity.shipments
        counts[key] = counts.get(key, 0) + 1
    keys = sorted(counts)
    rows = await conn.fetch(
        "INSERT INTO reserve_node_load (node_id, day, shipments)"
        " SELECT * FROM unnest($1::text[], $2::date[], $3::integer[])"
        " ON CONFLICT (node_id, day) DO UPDATE"
        " SET shipments = reserve_node_load.shipments + EXCLUDED.shipments"
        " RETURNING node_id, day, shipments",
        [k[0] for k in keys],
        [k[1] for k in keys],
        [counts[k] for k in keys],
    )
    for r in rows:
        limit = capacity.get((r["node_id"], r["day"]))
        if limit is not None and r["shipments"] > limit:
            day = r["day"].isoformat()
            raise _LostRace(f"{r['node_id']} has no capacity left on {day} ({limit} shipments)")


async def release_replaced(conn: asyncpg.Connection, repair: Repair) -> bool:
    """Give back what the failing shipment held for the repaired quantities (all of it if it is
    cancelled); True if it held anything."""
    if repair.replaces_shipment_id is None:
        return False
    rows = await conn.fetch(
        "SELECT reservation_id, line_id, node_id, sku, quantity FROM reserve_reservations"
        " WHERE shipment_id = $1 AND status = 'active' FOR UPDATE",
        repair.replaces_shipment_id,
    )
    wanted = {line.line_id: line.quantity for line in repair.lines}
    for r in rows:
        give_back = (
            r["quantity"] if repair.cancel_replaced else min(r["quantity"], wanted.get(r["line_id"], 0))
        )
        if give_back <= 0:
            continue
        if give_back == r["quantity"]:
            await conn.execute(
                "UPDATE reserve_reservations SET status = 'released', released_at = now()"
                " WHERE reservation_id = $1",
                r["reservation_id"],
            )
        else:
            await conn.execute(
                "UPDATE reserve_reservations SET quantity = quantity - $2 WHERE reservation_id = $1",
                r["reservation_id"],
                give_back,
            )
        await conn.execute(
            "UPDATE reserve_ledger SET reserved = reserved - $3, updated_at = now()"
            " WHERE node_id = $1 AND sku = $2",
            r["node_id"],
            r["sku"],
            give_back,
        )
    if rows:
        await give_back_slots(conn, {repair.replaces_shipment_id})
    return bool(rows)


async def apply_snapshot(conn: asyncpg.Connection, count: InventorySnapshot) -> None:
    """A count replaces on-hand and safety stock; what is reserved stays reserved.

    A count below what is reserved is a shortage for the exceptions stage to find, not something to
    hide by releasing reservations here. A count older (by `as_of`) than the one the row holds changes
    nothing: a late or resent snapshot would put back stock that has since moved. Shipments that left
    after the count was taken come off it (the rules of `orchestrator.domain.stock_counts`).
    """
    applied = await conn.fetchval(
        "INSERT INTO reserve_ledger (node_id, sku, on_hand, safety_stock, counted_at)"
        " VALUES ($1, $2, GREATEST($3::integer - COALESCE((SELECT sum(units) FROM reserve_shipped"
        "   WHERE node_id = $1 AND sku = $2 AND shipped_at > $5), 0), 0), $4, $5)"
        " ON CONFLICT (node_id, sku) DO UPDATE"
        " SET on_hand = EXCLUDED.on_hand, safety_stock = $4, counted_at = $5, updated_at = now()"
        " WHERE reserve_ledger.counted_at IS NULL OR reserve_ledger.counted_at <= $5"
        " RETURNING true",
        count.node_id,
        count.sku,
        count.on_hand,
        count.safety_stock,
        count.as_of,
    )
    if applied:
        await forget_counted_shipments(conn, [((count.node_id, count.sku), count.as_of)])


async def forget_counted_shipments(
    conn: asyncpg.Connection, counted: Sequence[tuple[tuple[str, str], datetime | None]]
) -> None:
    """Drop the shipments each new count has seen from its position's log: no later count is older."""
    await conn.execute(
        "DELETE FROM reserve_shipped s USING unnest($1::text[], $2::text[], $3::timestamptz[])"
        " AS c(node_id, sku, counted_at)"
        " WHERE s.node_id = c.node_id AND s.sku = c.sku AND s.shipped_at <= c.counted_at",
        [k[0] for k, _ in counted],
        [k[1] for k, _ in counted],
        [at for _, at in counted],
    )


async def shipment_logs(
    conn: asyncpg.Connection, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], list[Shipped]]:
    """The shipment log of each of these positions."""
    rows = await conn.fetch(
        "SELECT s.node_id, s.sku, s.shipped_at, s.units FROM reserve_shipped s"
        " JOIN unnest($1::text[], $2::text[]) AS k(node_id, sku) USING (node_id, sku)",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    logs: dict[tuple[str, str], list[Shipped]] = {}
    for r in rows:
        logs.setdefault((r["node_id"], r["sku"]), []).append((r["shipped_at"], r["units"]))
    return logs


@dataclass
class _Hold:
    """One reservation of a shipment that left: the units it held, and how many of them it took."""

    reservation_id: str
    line_id: str
    sku: str
    held: int
    taken: int = 0


async def consume_shipment(
    conn: asyncpg.Connection, shipped: WorkOrderShipped
) -> ReservationsConsumed | None:
    """The node shipped: what its shipment held of each shipped line leaves reserved and on-hand.

    At most what the reservation still holds (a resent event, or more units than were reserved,
    consume nothing more; the node's count corrects the rest). A shipment whose reservations a
    newer plan or a cancellation released consumes nothing: those units were given back, and the
    node's count says what really left. A work order ships once, so what the shipment held beyond
    what left (units picked short, lines left out) is given back with it: a playbook that moves
    those units reserves them elsewhere, one that back-orders or holds them does not keep them
    here. Five statements whatever the number of lines.
    """
    rows = await conn.fetch(
        "SELECT reservation_id, line_id, node_id, sku, quantity FROM reserve_reservations"
        " WHERE shipment_id = $1 AND status = 'active' ORDER BY reservation_id FOR UPDATE",
        shipped.shipment_id,
    )
    holds = {
        r["line_id"]: _Hold(r["reservation_id"], r["line_id"], r["sku"], r["quantity"])
        for r in rows
        if r["node_id"] == shipped.node_id
    }
    consumed: list[SkuLine] = []
    for line in shipped.lines:
        hold = holds.get(line.line_id)
        if hold is None or hold.sku != line.sku or hold.taken >= hold.held:
            continue
        units = min(line.quantity, hold.held - hold.taken)
        hold.taken += units
        consumed.append(SkuLine(line_id=line.line_id, sku=line.sku, quantity=units))
    if not consumed:
        return None
    released = [
        SkuLine(line_id=h.line_id, sku=h.sku, quantity=h.held - h.taken)
        for h in holds.values()
        if h.held > h.taken
    ]
    await conn.execute(
        "UPDATE reserve_reservations r SET consumed = r.consumed + u.units, released_at = $3,"
        " status = CASE WHEN u.units > 0 THEN 'consumed' ELSE 'released' END"
        " FROM unnest($1::text[], $2::integer[]) AS u(reservation_id, units)"
        " WHERE r.reservation_id = u.reservation_id",
        [h.reservation_id for h in holds.values()],
        [h.taken for h in holds.values()],
        shipped.occurred_at,
    )
    skus = sorted({h.sku for h in holds.values()})
    positions = {sku: Counted() for sku in skus}
    for r in await conn.fetch(
        "SELECT sku, on_hand, safety_stock, counted_at FROM reserve_ledger"
        " WHERE node_id = $1 AND sku = ANY($2::text[]) ORDER BY sku FOR UPDATE",
        shipped.node_id,
        skus,
    ):
        positions[r["sku"]] = Counted(r["on_hand"], r["safety_stock"], r["counted_at"])
    logged = [line for line in consumed if consume(positions[line.sku], line.quantity, shipped.occurred_at)]
    if logged:
        await conn.execute(
            "INSERT INTO reserve_shipped (node_id, sku, shipped_at, units)"
            " SELECT $1, u.sku, $2, u.units FROM unnest($3::text[], $4::integer[]) AS u(sku, units)",
            shipped.node_id,
            shipped.occurred_at,
            [line.sku for line in logged],
            [line.quantity for line in logged],
        )
    off = dict.fromkeys(skus, 0)
    for h in holds.values():
        off[h.sku] += h.held  # consumed or given back, every unit held leaves `reserved`
    await conn.execute(
        "UPDATE reserve_ledger l SET reserved = l.reserved - u.units, on_hand = u.on_hand, updated_at = now()"
        " FROM unnest($2::text[], $3::integer[], $4::integer[]) AS u(sku, units, on_hand)"
        " WHERE l.node_id = $1 AND l.sku = u.sku",
        shipped.node_id,
        skus,
        [off[sku] for sku in skus],
        [positions[sku].on_hand for sku in skus],
    )
    return ReservationsConsumed(
        order_id=shipped.order_id,
        shipment_id=shipped.shipment_id,
        work_order_id=shipped.work_order_id,
        node_id=shipped.node_id,
        shipped_at=shipped.occurred_at,
        lines=tuple(consumed),
        released=tuple(released),
    )


async def apply_delta(conn: asyncpg.Connection, delta: InventoryDelta) -> None:
    """Move on-hand by the delta, never below zero (a removal the ledger never saw stock for)."""
    await conn.execute(
        "INSERT INTO reserve_ledger (node_id, sku, on_hand) VALUES ($1, $2, GREATEST($3, 0))"
        " ON CONFLICT (node_id, sku) DO UPDATE"
        " SET on_hand = GREATEST(reserve_ledger.on_hand + $3, 0), updated_at = now()",
        delta.node_id,
        delta.sku,
        delta.change,
    )


@dataclass
class InventoryBatch:
    """What `read_inventory` did for one partition's batch: the stock events it applied already."""

    #: Ids of the events whose change the ledger holds now.
    applied: frozenset[str]
    #: SKUs a count or a receipt of the batch may have brought stock to.
    stocked: frozenset[str]
    #: SKUs with lines in their queue (the others have nothing to release or re-date).
    queued: frozenset[str]
    #: SKUs whose queue a handler of this batch has seen to.
    seen_to: set[str] = field(default_factory=set)

    def queue_to_see_to(self, sku: str) -> bool:
        """Lines wait for the SKU and no handler of this batch has seen to its queue yet."""
        return sku in self.queued and sku not in self.seen_to

    def settled(self, event: Envelope) -> bool:
        """True for a stock event this batch applied whose SKU's queue needs nothing of it. The
        worker then calls no handler for it (`SettlingBatch`): a batch of 500 deltas is then a few
        statements, not 500 handler calls inside the ledger's lock."""
        data = event.data
        return (
            event.id in self.applied
            and isinstance(data, (InventorySnapshot, InventoryDelta))
            and not self.queue_to_see_to(data.sku)
        )


_UPSERT_POSITIONS = (
    "INSERT INTO reserve_ledger (node_id, sku, on_hand, safety_stock, counted_at)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::timestamptz[])"
    " ON CONFLICT (node_id, sku) DO UPDATE SET on_hand = EXCLUDED.on_hand,"
    " safety_stock = EXCLUDED.safety_stock, counted_at = EXCLUDED.counted_at, updated_at = now()"
)


async def read_inventory(events: Sequence[Envelope], conn: asyncpg.Connection) -> InventoryBatch | None:
    """Apply every count and delta of the batch in three statements, not a few per event.

    A batch is one partition's, so it holds stock events only or plans only. The positions it
    touches are read (locked), folded in order by the rules of `orchestrator.domain.stock_counts`
    (those of `apply_snapshot` and `apply_delta`) and written back at once. The queues are seen to
    once per SKU afterwards, against the batch's final stock: the order a sequence of events from
    independent partitions could have come in anyway.
    """
    seen: set[str] = set()
    changes: list[InventorySnapshot | InventoryDelta] = []
    ids: list[str] = []
    for env in events:
        if env.id in seen or not isinstance(env.data, (InventorySnapshot, InventoryDelta)):
            continue  # a duplicate in the batch is skipped by the worker: it must change nothing here
        seen.add(env.id)
        changes.append(env.data)
        ids.append(env.id)
    if not changes:
        return None
    await conn.execute("SELECT pg_advisory_xact_lock($1)", LEDGER_LOCK)
    keys = sorted({(c.node_id, c.sku) for c in changes})
    rows = await conn.fetch(
        "SELECT l.node_id, l.sku, l.on_hand, l.safety_stock, l.counted_at FROM reserve_ledger l"
        " JOIN unnest($1::text[], $2::text[]) AS k(node_id, sku) USING (node_id, sku) FOR UPDATE OF l",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    before = {
        (r["node_id"], r["sku"]): Counted(r["on_hand"], r["safety_stock"], r["counted_at"]) for r in rows
    }
    counted_keys = sorted({(c.node_id, c.sku) for c in changes if isinstance(c, InventorySnapshot)})
    logs = await shipment_logs(conn, counted_keys) if counted_keys else {}
    # A change the integer columns cannot hold is left out: its own handler then fails on it, alone,
    # and it is dead-lettered with the database's reason, as it was before batches.
    folded, kept = fold_changes(before, changes, limit=INT4_MAX, shipped=logs)
    after = sorted((k, v) for k, v in folded.items() if before.get(k) != v)
    # A new count has seen the shipments before it (deleting them twice is harmless).
    recounted = [(k, v.counted_at) for k, v in after if k in logs and v.counted_at is not None]
    if recounted:
        await forget_counted_shipments(conn, recounted)
    if after:
        await conn.execute(
            _UPSERT_POSITIONS,
            [k[0] for k, _ in after],
            [k[1] for k, _ in after],
            [v.on_hand for _, v in after],
            [v.safety_stock for _, v in after],
            [v.counted_at for _, v in after],
        )
    applied = [ids[i] for i in kept]
    changes = [changes[i] for i in kept]
    skus = sorted({c.sku for c in changes})
    queued = await conn.fetch("SELECT DISTINCT sku FROM reserve_waiting WHERE sku = ANY($1::text[])", skus)
    return InventoryBatch(
        applied=frozenset(applied),
        stocked=frozenset(c.sku for c in changes if isinstance(c, InventorySnapshot) or c.change > 0),
        queued=frozenset(r["sku"] for r in queued),
    )


async def announce_owed(ctx: HandlerContext, skus: set[str]) -> None:
    """Tell the promise API what the queues of these SKUs are owed now (their latest word)."""
    if not skus:
        return
    rows = await ctx.db.fetch(
        "SELECT s.sku, COALESCE(sum(w.quantity), 0) AS units FROM unnest($1::text[]) AS s(sku)"
        " LEFT JOIN reserve_waiting w ON w.sku = s.sku GROUP BY s.sku ORDER BY s.sku",
        sorted(skus),
    )
    for r in rows:
        ctx.emit(QUEUES, QueueOwed(sku=r["sku"], units=int(r["units"]), as_of=ctx.now))


async def superseded(conn: asyncpg.Connection, plan: PlanDecided, repair: Repair) -> str | None:
    """Why a repair plan must not be reserved any more, or None when it still applies.

    A repair is decided on the order as it was. When a whole plan made since (an amendment, a
    re-decide) or a cancellation has already given back what the repair replaces, reserving it would
    hold the same lines twice and release a second work order for them.
    """
    row = await conn.fetchrow(
        "SELECT sequence, cancelled FROM reserve_orders WHERE order_id = $1 FOR UPDATE", plan.order_id
    )
    if row is not None and row["cancelled"]:
        return "the order is cancelled"
    replaced = repair.replaces_shipment_id
    # What the replaced shipment holds, and whether it left: read once, for every check below.
    held = None
    if replaced is not None:
        held = await conn.fetchrow(
            "SELECT COALESCE(bool_or(status = 'active'), false) AS holds,"
            " COALESCE(bool_or(consumed > 0), false) AS left_node"
            " FROM reserve_reservations WHERE shipment_id = $1",
            replaced,
        )
    # A parcel sent again stands: every whole plan since left its units out, as they had left
    # (`plan_what_has_not_left`), or was undone for them when the parcel left after it.
    resent = sends_a_parcel_again(repair) and held is not None and held["left_node"]
    if row is not None and plan.sequence < row["sequence"] and not resent:
        return f"decided for order sequence {plan.sequence}, reserve has planned {row['sequence']} since"
    if from_queue(repair) and await conn.fetchval(
        "SELECT count(*) FROM reserve_waiting WHERE order_id = $1 AND line_id = ANY($2::text[])",
        plan.order_id,
        [line.line_id for line in repair.lines],
    ) < len(repair.lines):
        # The queue asks again when a request goes unanswered for a while (a backlog, not a refusal):
        # the first plan to arrive took the lines out of the queue, and a second would ship them again.
        return "its lines wait no more: an earlier request for them was planned"
    if held is None:
        return None
    if held["left_node"] and repair.dropped_if_shipped:
        # The node shipped the work it was asked to stop: planned again, its lines would ship twice.
        return f"shipment {replaced} left the node after all: its lines are on their way"
    # A shipment that left otherwise still stands: a lost parcel is repaired from new stock.
    if not (held["holds"] or held["left_node"]):
        return f"shipment {replaced} holds nothing any more: a newer plan replaced it"
    return None


def shipments_given_back(
    order_id: str, plan_id: str | None, shipment_ids: tuple[str, ...], reason: str
) -> ReservationsReleased:
    """Tell release (which cancels their work orders) and the ledgers that follow this one that
    these shipments, and only they, hold nothing any more."""
    return ReservationsReleased(
        order_id=order_id, plan_id=plan_id, reason=reason, cancel_order=False, shipment_ids=shipment_ids
    )


def redecide(plan: PlanDecided, lost: _LostRace) -> RedecideRequested:
    """Send a plan that lost a race back to decide-node, which plans again on fresh stock.

    A repair keeps its exclusions (the failed node must stay out); a whole-order plan starts clean.
    """
    return RedecideRequested(
        order_id=plan.order_id,
        sequence=plan.sequence,
        attempt=plan.attempt + 1,
        order=plan.order,
        excluded_nodes=plan.excluded_nodes if plan.repair is not None else (),
        reason=Reason(code="reservation_failed", message=str(lost)),
        repair=plan.repair,
    )


def confirmation(plan: PlanDecided, shipments: list[ReservedShipment]) -> ReservationConfirmed:
    """What release needs of a plan whose stock is held: its shipments, and for a plan of the whole
    order what waits (a repair's own waiting lines are the queue's business)."""
    return ReservationConfirmed(
        order_id=plan.order_id,
        plan_id=plan.plan_id,
        plan_version=plan.plan_version,
        sequence=plan.sequence,
        order=plan.order,
        shipments=tuple(shipments),
        backordered=plan.backordered if plan.repair is None else (),
        repair=plan.repair,
    )


def reserve_stage(
    *, preorder_release: PreorderRelease = PreorderRelease.ON_RELEASE_DATE, supply_tick_s: float = 30.0
) -> Stage:
    supply_ticker = SupplyTicker(tick_s=supply_tick_s)
    measures = StageMeasures("reserve-measures", _prepare_metrics)

    def counted(ctx: HandlerContext, result: str, plan: str) -> None:
        measures.count(ctx, lambda m: m.reservations.labels(result, plan).inc())

    async def on_repair(ctx: HandlerContext, plan: PlanDecided, repair: Repair) -> None:
        """A partial plan: reserve the new allocations, then free the failing shipment's, all or nothing."""
        conn = ctx.db
        why = await superseded(conn, plan, repair)
        if why is not None:
            ctx.log.info("repair ignored", order_id=plan.order_id, plan_id=plan.plan_id, reason=why)
            counted(ctx, SUPERSEDED, REPAIR)
            if repair.action != RELEASE_WAITING:
                # The exception waits for an answer: what it asked for was done another way already.
                ctx.emit(
                    EXCEPTIONS,
                    RepairOutcome(
                        order_id=plan.order_id,
                        exception_id=repair.exception_id,
                        action=repair.action,
                        succeeded=True,
                        detail=f"not needed any more: {why}",
                    ),
                )
            return
        try:
            async with conn.transaction():
                shipments = await reserve_plan(conn, plan)
                # Only after the new stock is held: a lost race must leave the old allocation for the retry.
                given_back = await release_replaced(conn, repair)
        except _LostRace as lost:
            ctx.emit(REROUTES, redecide(plan, lost))
            counted(ctx, LOST_RACE, REPAIR)
            return
        await remember_replaced(conn, plan, repair, ctx.now)
        await remember_resent(conn, plan, repair)
        if shipments:
            ctx.emit(RESERVATIONS, confirmation(plan, shipments))
            counted(ctx, CONFIRMED, REPAIR)
        elif given_back and repair.cancel_replaced and repair.replaces_shipment_id is not None:
            # Nothing new to confirm (its lines wait for stock): release still has the failing work
            # order to cancel, and the ledgers that follow this one its stock to give back.
            why = f"{repair.action} of exception {repair.exception_id}: its lines wait for stock"
            ctx.emit(
                RESERVATIONS, shipments_given_back(plan.order_id, None, (repair.replaces_shipment_id,), why)
            )
        rechecks = await take_rechecks(conn, plan)
        changed = await record_plan(conn, plan, ctx.now)
        await announce_owed(ctx, changed)
        for sku in sorted(changed & rechecks):
            await release_ready(ctx, sku, preorder_release)
        await refresh_dates(ctx, changed)

    async def on_plan(ctx: HandlerContext, plan: PlanDecided) -> None:
        conn = ctx.db
        row = await conn.fetchrow(
            "SELECT sequence, active_plan_id, cancelled FROM reserve_orders WHERE order_id = $1 FOR UPDATE",
            plan.order_id,
        )
        if row is not None and (row["cancelled"] or plan.sequence < row["sequence"]):
            # A plan for an order that has since been cancelled or changed again.
            if plan.shipments:
                counted(ctx, SUPERSEDED, WHOLE)
            return
        old_plan = row["active_plan_id"] if row else None
        given_back = await give_back_order(conn, plan.order_id)
        # Before this plan is held or lost: its node may still ship the old work, cancel or not.
        await remember_replanned(conn, plan, given_back, ctx.now)
        # The old work may have left while the re-plan travelled here: hold only the rest.
        remaining = plan_what_has_not_left(plan, await units_left(conn, plan.order_id))
        if remaining.left_out:
            ctx.log.info(
                "re-plan leaves out what has left",
                order_id=plan.order_id,
                plan_id=plan.plan_id,
                left_out=dict(remaining.left_out),
            )
            measures.count(ctx, lambda m: m.replan_units_left_out.inc(remaining.units_left_out))
        plan = remaining.plan
        if given_back and old_plan is not None:
            ctx.emit(
                RESERVATIONS,
                ReservationsReleased(
                    order_id=plan.order_id,
                    plan_id=old_plan,
                    reason=f"replaced by plan {plan.plan_id}",
                    cancel_order=False,
                ),
            )
        active: str | None = None
        if plan.shipments:
            try:
                async with (
                    conn.transaction()
                ):  # a savepoint: a lost race undoes this plan's reservations only
                    shipments = await reserve_plan(conn, plan)
            except _LostRace as lost:
                await conn.execute(
                    "INSERT INTO reserve_orders (order_id, sequence, redecides) VALUES ($1, $2, 1)"
                    " ON CONFLICT (order_id) DO UPDATE SET sequence = $2, active_plan_id = NULL,"
                    " redecides = reserve_orders.redecides + 1",
                    plan.order_id,
                    plan.sequence,
                )
                ctx.emit(REROUTES, redecide(plan, lost))
                counted(ctx, LOST_RACE, WHOLE)
                return
            active = plan.plan_id
            ctx.emit(RESERVATIONS, confirmation(plan, shipments))
            counted(ctx, CONFIRMED, WHOLE)
            already = f"; {remaining.units_left_out} unit(s) had left already" if remaining.left_out else ""
            emit_status(
                ctx,
                plan.order_id,
                OrderState.RESERVED,
                plan.sequence,
                detail=f"stock reserved for {len(shipments)} shipment(s){already}",
            )
        elif remaining.left_out and not plan.backordered:
            emit_status(
                ctx,
                plan.order_id,
                OrderState.SHIPPED,
                plan.sequence,
                detail="every unit of the order had left a node before the re-plan: nothing is planned again",
            )
        await conn.execute(
            "INSERT INTO reserve_orders (order_id, sequence, active_plan_id) VALUES ($1, $2, $3)"
            " ON CONFLICT (order_id) DO UPDATE SET sequence = $2, active_plan_id = $3",
            plan.order_id,
            plan.sequence,
            active,
        )
        # Lines the plan could not place now wait in their SKU's queue, with a date when supply is known.
        rechecks = await take_rechecks(conn, plan)
        queued = await record_plan(conn, plan, ctx.now)
        await announce_owed(ctx, queued)
        # The plan may have seen stock a moment stale, or set some aside for the queue it now joins:
        # if what is there covers the queue, plan it. Only once per decision (attempt 0), so a line
        # that cannot be planned for another reason does not go round in circles; and once more for
        # a line whose plan was decided before a node holding its SKU opened.
        for sku in sorted(queued if plan.attempt == 0 else queued & rechecks):
            await release_ready(ctx, sku, preorder_release)
        await refresh_dates(ctx, queued)

    async def on_cancel(ctx: HandlerContext, msg: PlanCancelled) -> None:
        row = await ctx.db.fetchrow(
            "SELECT active_plan_id, cancelled FROM reserve_orders WHERE order_id = $1 FOR UPDATE",
            msg.order_id,
        )
        if row is not None and row["cancelled"]:
            return
        freed = await give_back_order(ctx.db, msg.order_id)
        # Whoever waited behind the order moves up the queue.
        forgotten = await forget_order(ctx.db, msg.order_id)
        await announce_owed(ctx, forgotten)
        await refresh_dates(ctx, forgotten)
        await ctx.db.execute(
            "INSERT INTO reserve_orders (order_id, sequence, cancelled) VALUES ($1, $2, true)"
            " ON CONFLICT (order_id) DO UPDATE SET sequence = $2, cancelled = true, active_plan_id = NULL",
            msg.order_id,
            msg.sequence,
        )
        ctx.emit(
            RESERVATIONS,
            ReservationsReleased(
                order_id=msg.order_id,
                plan_id=row["active_plan_id"] if row else None,
                reason=msg.reason,
                cancel_order=True,
            ),
        )
        emit_status(
            ctx,
            msg.order_id,
            OrderState.CANCELLED,
            msg.sequence,
            detail=f"{msg.reason}; {len(freed)} reservation(s) released",
        )

    async def on_inventory(ctx: HandlerContext, data: InventorySnapshot | InventoryDelta) -> None:
        if isinstance(data, InventorySnapshot):
            await apply_snapshot(ctx.db, data)
        else:
            await apply_delta(ctx.db, data)
        if isinstance(data, InventorySnapshot) or data.change > 0:
            # Stock came in: plan the waiting lines it covers, then re-date the rest of the queue.
            await release_ready(ctx, data.sku, preorder_release)
        await refresh_dates(ctx, {data.sku})

    async def see_to_queue(ctx: HandlerContext, batch: InventoryBatch, sku: str) -> None:
        """Once per SKU of a batch whose stock `read_inventory` applied: release and re-date its queue."""
        if not batch.queue_to_see_to(sku):
            return
        batch.seen_to.add(sku)
        if sku in batch.stocked:
            await release_ready(ctx, sku, preorder_release)
        await refresh_dates(ctx, {sku})

    async def on_shipped(ctx: HandlerContext, shipped: WorkOrderShipped) -> None:
        consumed = await consume_shipment(ctx.db, shipped)
        if consumed is not None:
            # It held its stock, so no repair gave it back (one that replaces work always gives all
            # of it back): there is nothing to undo.
            ctx.emit(RESERVATIONS, consumed)
            return
        for undone in await undo_replacements(ctx.db, shipped):
            counted(ctx, UNDONE, WHOLE if undone.whole else REPAIR)
            if undone.whole:
                why = f"{shipped.work_order_id} shipped after all: what is held for its lines is not needed"
            else:
                why = f"{shipped.work_order_id} shipped after all: repair plan {undone.plan_id} is not needed"
            ctx.log.warning(
                "re-plan undone" if undone.whole else "repair undone",
                order_id=shipped.order_id,
                plan_id=undone.plan_id,
                given_back=undone.given_back,
                shipped_too=undone.shipped_too,
            )
            if undone.given_back:
                ctx.emit(
                    RESERVATIONS,
                    shipments_given_back(shipped.order_id, undone.plan_id, undone.given_back, why),
                )
            if undone.unqueued:
                await announce_owed(ctx, set(undone.unqueued))

    async def on_node(ctx: HandlerContext, node_id: str, is_open: bool, at: datetime) -> None:
        """A node added, opened or closed. While closed its stock is not available to the queues (a
        line released to it would only be back-ordered again); when it opens, the queues of the SKUs
        it has to spare may move, though no stock event comes with it."""
        if not is_open:
            await ctx.db.execute(
                "INSERT INTO reserve_closed_nodes (node_id, since) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                node_id,
                at,
            )
            return
        # In turn with the ledger's writers: a line one of them back-orders without this node is
        # committed before the waiting lines are read here, so it is not missed.
        await ctx.db.execute("SELECT pg_advisory_xact_lock($1)", LEDGER_LOCK)
        await ctx.db.execute("DELETE FROM reserve_closed_nodes WHERE node_id = $1", node_id)
        skus = [
            r["sku"]
            for r in await ctx.db.fetch(
                "SELECT DISTINCT w.sku FROM reserve_waiting w JOIN reserve_ledger l ON l.sku = w.sku"
                " WHERE l.node_id = $1 AND l.on_hand - l.reserved - l.safety_stock > 0 ORDER BY w.sku",
                node_id,
            )
        ]
        if not skus:
            return
        # Lines whose plan is on its way were decided without this node: if they come back to
        # wait, they are planned once more (`take_rechecks`).
        await ctx.db.execute(
            "UPDATE reserve_waiting SET recheck = true WHERE state = 'requested' AND sku = ANY($1::text[])",
            skus,
        )
        for sku in skus:
            await release_ready(ctx, sku, preorder_release)

    async def handle(event: Envelope, ctx: HandlerContext) -> None:
        data = event.data
        batch = ctx.batch
        if isinstance(batch, InventoryBatch) and event.id in batch.applied:
            # Already in the ledger, under the lock read_inventory took for this transaction.
            assert isinstance(data, (InventorySnapshot, InventoryDelta))
            await see_to_queue(ctx, batch, data.sku)
            return
        # A node closing writes nothing of the ledger's: it does not wait for the ledger's lock.
        if isinstance(data, NodeUpserted):
            await on_node(ctx, data.node_id, data.open, event.time)
            return
        if isinstance(data, NodeStatusChanged):
            await on_node(ctx, data.node_id, data.open, data.changed_at)
            return
        # One partition's batch is one transaction and may touch many ledger rows in any order, so two
        # batches locking rows crosswise deadlock (seen at 20 orders/s in `make run`). Ledger writers
        # take turns instead: the lock lasts until the batch's database commit, milliseconds.
        await ctx.db.execute("SELECT pg_advisory_xact_lock($1)", LEDGER_LOCK)
        if isinstance(data, PlanDecided) and data.repair is not None:
            await on_repair(ctx, data, data.repair)
        elif isinstance(data, PlanDecided):
            await on_plan(ctx, data)
        elif isinstance(data, PlanCancelled):
            await on_cancel(ctx, data)
        elif isinstance(data, (InventorySnapshot, InventoryDelta)):
            await on_inventory(ctx, data)
        elif isinstance(data, InboundSupplyExpected):
            await record_inbound(ctx.db, data)
            await refresh_dates(ctx, {data.sku})
        elif isinstance(data, WorkOrderShipped):
            await on_shipped(ctx, data)
        elif isinstance(data, SupplyReleaseDue):
            # The ticker says which day came; never earlier than today.
            await release_ready(ctx, data.sku, preorder_release, today=max(data.day, ctx.now.date()))
            await refresh_dates(ctx, {data.sku})
        else:  # pragma: no cover - `accepts` lets nothing else through
            raise RejectEvent(f"reserve does not handle {event.type}")

    return Stage(
        name="reserve",
        inputs=(PLANS, INVENTORY_UPDATES, SUPPLY, WMS_EVENTS, NETWORK_UPDATES),
        outputs=(RESERVATIONS, REROUTES, STATUS, CUSTOMER_NOTIFICATIONS, EXCEPTIONS, QUEUES),
        handler=handle,
        uses_database=True,
        accepts=frozenset(
            m.event_type
            for m in (
                PlanDecided,
                PlanCancelled,
                InventorySnapshot,
                InventoryDelta,
                InboundSupplyExpected,
                SupplyReleaseDue,
            )
        ),
        views=(supply_ticker, measures),
        observes=frozenset({WMS_EVENTS, NETWORK_UPDATES}),
        wanted_there={
            WMS_EVENTS: frozenset({WorkOrderShipped.event_type}),
            NETWORK_UPDATES: frozenset({NodeUpserted.event_type, NodeStatusChanged.event_type}),
        },
        read_batch=read_inventory,
        description="keeps the inventory ledger and reserves stock atomically",
    )
