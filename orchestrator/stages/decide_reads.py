"""What decide-node reads of the database, for a whole batch of events at once.

A decision reads the order's row (locked), the node load of the day, the
ledger's stock of the order's SKUs and what their queues are owed: four round
trips per order, then two writes. On this machine a round trip costs the
stage about 90 us of CPU, more than the rest of its work per order together,
so `read_decisions` reads all of it for the batch in four queries before the
first handler, and handlers write through `ctx.defer`.

What stays exact:
- the order rows are locked in one statement, in order id order (so two
  batches never lock the same orders in opposite orders), and held to commit
  as the one-at-a-time reads held them;
- decide-node writes its own rows only through `DecideReads.wrote`, which keeps
  the batch's copy current for a later event of the same order in the batch;
- the ledger, node load and queues are reserve's: decide-node never writes
  them, so one read per batch sees what one read per event would have, up to
  reserve's own concurrent commits, which the one-at-a-time reads raced too
  (reserve is the atomic check; a lost race comes back as a re-decide);
- node load is read for the dates a shipment planned on the batch's UTC date
  can leave a node on (its local date, one of the three around the UTC
  date, or past the cut-off the next working day), and each plan the batch makes counts
  toward it (`DecideReads.planned`): a later order of the batch does not
  take a node's last slot again (reserve holds a plan only within capacity);
- anything the batch did not read (the load once the UTC date turns, an order
  or SKU not in the batch) is read as before, one query each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import asyncpg

from orchestrator.contract.envelope import Envelope
from orchestrator.contract.orders import OrderCreated
from orchestrator.contract.pipeline import OrderValidated, PlanDecided, RedecideRequested
from orchestrator.domain.network import SHIP_DAY_SEARCH_DAYS
from orchestrator.domain.supply import set_aside


@dataclass(frozen=True, slots=True)
class OrderRow:
    """decide-node's row of one order: its latest plan version and sequence, and if it is cancelled."""

    latest_version: int
    sequence: int
    cancelled: bool


@dataclass
class DecideReads:
    """The batch's reads; `orders` holds a row (or None: no row yet) for every order id it asked for."""

    orders: dict[str, OrderRow | None] = field(default_factory=dict)
    #: The UTC date the load was read on, and shipments per (node, ship date) around it.
    load_day: date | None = None
    load: dict[tuple[str, date], int] = field(default_factory=dict)
    skus: frozenset[str] = frozenset()
    #: Units available per (node, SKU) of `skus`: on hand less reserved less safety stock (may be < 0).
    available: dict[tuple[str, str], int] = field(default_factory=dict)
    #: Units the queue of each SKU of `skus` is owed, in all and per (order id, SKU).
    owed: dict[str, int] = field(default_factory=dict)
    owed_to: dict[tuple[str, str], int] = field(default_factory=dict)

    def wrote(self, order_id: str, row: OrderRow) -> None:
        """decide-node wrote this order's row: later events of the batch see it."""
        self.orders[order_id] = row

    def planned(self, plan: PlanDecided) -> None:
        """The batch made this plan: its shipments count toward their nodes' days for later decisions."""
        for shipment in plan.shipments:
            key = plan.node_day(shipment)
            self.load[key] = self.load.get(key, 0) + 1

    def stock(self, order: OrderCreated, behind_the_queue: bool) -> dict[tuple[str, str], int] | None:
        """`stock_view` of the order from the batch's reads; None when they do not cover its SKUs."""
        skus = {line.sku for line in order.lines}
        if not skus <= self.skus:
            return None
        stock = {key: max(0, units) for key, units in self.available.items() if key[1] in skus}
        if not behind_the_queue:
            return stock
        others = {sku: self.owed.get(sku, 0) - self.owed_to.get((order.order_id, sku), 0) for sku in skus}
        return set_aside(stock, {sku: units for sku, units in others.items() if units > 0})


def around(day: date) -> list[date]:
    """The dates a shipment planned on UTC's `day` can leave a node on: its local date is one of
    the three around `day`; after the cut-off it leaves the next working day, which from a local
    Friday is the Monday after, and past the node's holidays up to `SHIP_DAY_SEARCH_DAYS` later."""
    return [day + timedelta(days=d) for d in range(-1, SHIP_DAY_SEARCH_DAYS + 3)]


async def planned_load(conn: asyncpg.Connection, days: Sequence[date]) -> dict[tuple[str, date], int]:
    """Shipments reserve holds per (node, ship date) on these dates."""
    rows = await conn.fetch(
        "SELECT node_id, day, shipments FROM reserve_node_load WHERE day = ANY($1::date[])", list(days)
    )
    return {(r["node_id"], r["day"]): r["shipments"] for r in rows}


def _orders_of(events: Sequence[Envelope]) -> list[OrderCreated]:
    orders = []
    for event in events:
        msg = event.data
        if isinstance(msg, OrderValidated | RedecideRequested):
            orders.append(msg.order)
    return orders


async def read_decisions(events: Sequence[Envelope], conn: asyncpg.Connection) -> DecideReads:
    """Everything the batch's decisions read, in four queries (see the module doc)."""
    orders = _orders_of(events)
    reads = DecideReads()
    if not orders:
        return reads
    order_ids = sorted({o.order_id for o in orders})
    rows = await conn.fetch(
        "SELECT order_id, latest_version, sequence, cancelled FROM decide_orders"
        " WHERE order_id = ANY($1::text[]) ORDER BY order_id FOR UPDATE",
        order_ids,
    )
    reads.orders = dict.fromkeys(order_ids)
    for r in rows:
        reads.orders[r["order_id"]] = OrderRow(r["latest_version"], r["sequence"], r["cancelled"])
    # The day the handlers will ask for: `ctx.now` is taken just before this read.
    reads.load_day = datetime.now(UTC).date()
    reads.load = await planned_load(conn, around(reads.load_day))
    skus = sorted({line.sku for o in orders for line in o.lines})
    reads.skus = frozenset(skus)
    ledger = await conn.fetch(
        "SELECT node_id, sku, on_hand - reserved - safety_stock AS available FROM reserve_ledger"
        " WHERE sku = ANY($1::text[])",
        skus,
    )
    reads.available = {(r["node_id"], r["sku"]): r["available"] for r in ledger}
    queued = await conn.fetch(
        "SELECT sku, NULL AS order_id, sum(quantity) AS units FROM reserve_waiting"
        " WHERE sku = ANY($1::text[]) GROUP BY sku"
        " UNION ALL"
        " SELECT sku, order_id, sum(quantity) FROM reserve_waiting"
        " WHERE sku = ANY($1::text[]) AND order_id = ANY($2::text[]) GROUP BY sku, order_id",
        skus,
        order_ids,
    )
    for r in queued:
        if r["order_id"] is None:
            reads.owed[r["sku"]] = int(r["units"])
        else:
            reads.owed_to[(r["order_id"], r["sku"])] = int(r["units"])
    return reads


__all__ = ["DecideReads", "OrderRow", "read_decisions"]
