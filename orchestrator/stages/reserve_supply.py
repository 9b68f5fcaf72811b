"""reserve's part for lines that wait for supply: back-orders and pre-orders.

Reserve owns the ledger, so it is the one that knows when stock arrives. It
keeps every waiting line of every plan (`reserve_waiting`) and the supply
expected from purchase orders and advance shipping notices
(`reserve_inbound`, from `inventory.inbound_expected.v1`). From them, by the
queue rule of `orchestrator.domain.supply`:

- every waiting line gets an expected availability date, and the customer is
  told it (a notification and a status the timeline shows) whenever it is
  first known or moves;
- when stock arrives (a count, a receipt) or a pre-order's release date
  comes (`supply.release_due.v1` from the ticker below), the lines the stock
  now covers are sent back to decide-node as a partial plan of just those
  lines (a ship-complete order: the whole order), through the normal
  reserve and release path. A plan that finds the stock gone again puts them
  back in the queue.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import replace
from datetime import date, datetime, timedelta

import asyncpg
import orjson

from orchestrator.contract.common import OrderState, Reason, SkuLine
from orchestrator.contract.envelope import Envelope
from orchestrator.contract.inventory import InboundSupplyExpected
from orchestrator.contract.orders import OrderCreated
from orchestrator.contract.pipeline import PlanDecided, RedecideRequested, Repair, SupplyReleaseDue
from orchestrator.contract.status import CustomerNotification, NotificationKind
from orchestrator.domain.supply import (
    RELEASE_WAITING,
    Inbound,
    PreorderRelease,
    WaitingLine,
    expected_dates,
    queue_request_id,
    releasable,
    waiting_lines,
)
from orchestrator.runtime.stage import HandlerContext
from orchestrator.runtime.ticker import Ticker
from orchestrator.stages.common import REROUTES, SUPPLY, emit_status

CUSTOMER_NOTIFICATIONS = "customer.notifications.v1"
#: A plan asked for and not answered within this long (decide-node refused it) goes back in the queue.
REQUEST_EXPIRES = timedelta(minutes=2)


async def record_plan(conn: asyncpg.Connection, plan: PlanDecided, now: datetime) -> set[str]:
    """Put the plan's waiting lines in their queues; returns the SKUs whose queue changed.

    A plan of the whole order replaces what the order had waiting; a partial plan (a repair, or
    lines whose supply came) replaces only its own lines.
    """
    if plan.repair is None:
        gone = await conn.fetch(
            "DELETE FROM reserve_waiting WHERE order_id = $1 RETURNING sku, line_id, since", plan.order_id
        )
    else:
        gone = await conn.fetch(
            "DELETE FROM reserve_waiting WHERE order_id = $1 AND line_id = ANY($2::text[])"
            " RETURNING sku, line_id, since",
            plan.order_id,
            [line.line_id for line in plan.repair.lines],
        )
    skus = {r["sku"] for r in gone}
    # A line that waits again keeps its place in the queue.
    places = {r["line_id"]: r["since"] for r in gone}
    whole = plan.order.ship_complete and not plan.shipments
    order_json = plan.order.model_dump_json()
    for line in waiting_lines(plan, since=now):
        line = replace(line, since=places.get(line.line_id, line.since))
        await conn.execute(
            "INSERT INTO reserve_waiting (order_id, line_id, sku, quantity, since, release_on, whole_order,"
            " sequence, order_json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            " ON CONFLICT (order_id, line_id) DO UPDATE SET quantity = $4, since = $5, release_on = $6,"
            " whole_order = $7, sequence = $8, order_json = $9, state = 'waiting', requested_at = NULL",
            line.order_id,
            line.line_id,
            line.sku,
            line.quantity,
            line.since,
            line.release_on,
            whole,
            plan.sequence,
            order_json,
        )
        skus.add(line.sku)
    return skus


async def take_rechecks(conn: asyncpg.Connection, plan: PlanDecided) -> set[str]:
    """SKUs of the plan's waiting lines (the whole order's, or a repair's own) to plan once more if
    they wait again (see `reserve_waiting.recheck`); the flags are cleared, so each counts once."""
    lines = None if plan.repair is None else [line.line_id for line in plan.repair.lines]
    rows = await conn.fetch(
        "UPDATE reserve_waiting SET recheck = false WHERE order_id = $1 AND recheck"
        " AND ($2::text[] IS NULL OR line_id = ANY($2::text[])) RETURNING sku",
        plan.order_id,
        lines,
    )
    return {r["sku"] for r in rows}


async def forget_order(conn: asyncpg.Connection, order_id: str) -> set[str]:
    """The order was cancelled: it waits for nothing any more."""
    gone = await conn.fetch("DELETE FROM reserve_waiting WHERE order_id = $1 RETURNING sku", order_id)
    return {r["sku"] for r in gone}


async def record_inbound(conn: asyncpg.Connection, supply: InboundSupplyExpected) -> None:
    """The latest word on one PO/ASN line replaces the earlier ones; quantity 0 withdraws it."""
    key = (supply.node_id, supply.sku, supply.reference)
    current = await conn.fetchval(
        "SELECT as_of FROM reserve_inbound WHERE node_id = $1 AND sku = $2 AND reference = $3", *key
    )
    if current is not None and current > supply.as_of:
        return  # an older update that arrived late
    if supply.quantity == 0:
        await conn.execute(
            "DELETE FROM reserve_inbound WHERE node_id = $1 AND sku = $2 AND reference = $3", *key
        )
        return
    await conn.execute(
        "INSERT INTO reserve_inbound (node_id, sku, reference, supply_kind, quantity, expected_date, as_of)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (node_id, sku, reference) DO UPDATE"
        " SET supply_kind = $4, quantity = $5, expected_date = $6, as_of = $7",
        *key,
        supply.supply_kind.value,
        supply.quantity,
        supply.expected_date,
        supply.as_of,
    )


async def _available(conn: asyncpg.Connection, sku: str) -> int:
    value = await conn.fetchval(
        "SELECT COALESCE(sum(GREATEST(on_hand - reserved - safety_stock, 0)), 0) FROM reserve_ledger"
        " WHERE sku = $1 AND node_id NOT IN (SELECT node_id FROM reserve_closed_nodes)",
        sku,
    )
    return int(value)


async def _queue(conn: asyncpg.Connection, sku: str, now: datetime) -> tuple[list[asyncpg.Record], int]:
    """The SKU's waiting lines (not those with a plan on its way) and the stock available now."""
    rows = await conn.fetch(
        "SELECT order_id, line_id, sku, quantity, since, release_on, whole_order, sequence, order_json,"
        " expected_date FROM reserve_waiting"
        " WHERE sku = $1 AND (state = 'waiting' OR requested_at < $2) ORDER BY since, order_id, line_id",
        sku,
        now - REQUEST_EXPIRES,
    )
    if not rows:
        # The common case on every count and receipt: nothing waits, so the stock need not be summed.
        return [], 0
    return list(rows), await _available(conn, sku)


def _line(row: asyncpg.Record) -> WaitingLine:
    return WaitingLine(
        order_id=row["order_id"],
        line_id=row["line_id"],
        sku=row["sku"],
        quantity=row["quantity"],
        since=row["since"],
        release_on=row["release_on"],
    )


def _order(row: asyncpg.Record) -> OrderCreated:
    raw = row["order_json"]
    return OrderCreated.model_validate(orjson.loads(raw) if isinstance(raw, str) else raw)


async def refresh_dates(ctx: HandlerContext, skus: set[str]) -> None:
    """Work out every waiting line's expected date again; tell each customer whose date is new or moved."""
    conn = ctx.db
    today = ctx.now.date()
    moved: dict[str, list[tuple[asyncpg.Record, date]]] = defaultdict(list)
    for sku in sorted(skus):
        rows, available = await _queue(conn, sku, ctx.now)
        if not rows:
            continue
        inbound = [
            Inbound(r["node_id"], r["sku"], r["reference"], r["quantity"], r["expected_date"])
            for r in await conn.fetch(
                "SELECT node_id, sku, reference, quantity, expected_date FROM reserve_inbound WHERE sku = $1",
                sku,
            )
        ]
        dates = expected_dates([_line(r) for r in rows], available, inbound, today)
        for row in rows:
            new = dates[(row["order_id"], row["line_id"])]
            if new == row["expected_date"]:
                continue
            await conn.execute(
                "UPDATE reserve_waiting SET expected_date = $3 WHERE order_id = $1 AND line_id = $2",
                row["order_id"],
                row["line_id"],
                new,
            )
            if new is not None:
                moved[row["order_id"]].append((row, new))
    for order_id, changes in sorted(moved.items()):
        _tell(ctx, order_id, changes)


def _tell(ctx: HandlerContext, order_id: str, changes: list[tuple[asyncpg.Record, date]]) -> None:
    order = _order(changes[0][0])
    parts = [
        f"{row['quantity']} x {row['sku']} (line {row['line_id']}) by {day.isoformat()}"
        for row, day in changes
    ]
    message = "Expected: " + "; ".join(parts) + "."
    latest = max(day for _, day in changes)
    preorder_only = all(row["release_on"] is not None for row, _ in changes)
    ctx.emit(
        CUSTOMER_NOTIFICATIONS,
        CustomerNotification(
            order_id=order_id,
            customer_id=order.customer_id,
            kind=NotificationKind.BACK_ORDERED,
            message=("Your pre-order: " if preorder_only else "Part of your order is waiting for stock. ")
            + message,
            new_promised_date=latest,
        ),
    )
    # The same words in the order's story, in the state the order waits in: a ship-complete order
    # waiting for all its stock is on hold (decide-node said so), not back-ordered, and must stay so.
    held = preorder_only or any(row["whole_order"] for row, _ in changes)
    emit_status(
        ctx,
        order_id,
        OrderState.ON_HOLD if held else OrderState.BACK_ORDERED,
        changes[0][0]["sequence"],
        reasons=(Reason(code="expected_availability", message=message),),
        detail=message,
    )


async def release_ready(
    ctx: HandlerContext, sku: str, release: PreorderRelease, *, today: date | None = None
) -> int:
    """Plan the SKU's waiting lines the stock now covers; returns how many lines were sent.
    `today`: the day it is for pre-orders (a release-due event says which day came)."""
    conn = ctx.db
    rows, available = await _queue(conn, sku, ctx.now)
    if not rows or available <= 0:
        return 0
    day = today or ctx.now.date()
    ready = {line.key for line in releasable([_line(r) for r in rows], available, day, release)}
    by_order: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for row in rows:
        if (row["order_id"], row["line_id"]) in ready:
            by_order[row["order_id"]].append(row)
    for order_id, lines in sorted(by_order.items()):
        first = lines[0]
        order = _order(first)
        reason = Reason(
            code="stock_arrived", message=f"stock of {sku} is in for {len(lines)} waiting line(s)"
        )
        if first["whole_order"]:
            # A ship-complete order ships in one go: decide it whole again (it holds again if still short).
            request = RedecideRequested(
                order_id=order_id, sequence=first["sequence"], attempt=1, order=order, reason=reason
            )
        else:
            request = RedecideRequested(
                order_id=order_id,
                sequence=first["sequence"],
                attempt=1,
                order=order,
                reason=reason,
                repair=Repair(
                    exception_id=queue_request_id(order_id, [r["line_id"] for r in lines], ctx.now),
                    action=RELEASE_WAITING,
                    lines=tuple(
                        SkuLine(line_id=r["line_id"], sku=r["sku"], quantity=r["quantity"]) for r in lines
                    ),
                    cancel_replaced=False,
                ),
            )
        ctx.emit(REROUTES, request)
        await conn.execute(
            "UPDATE reserve_waiting SET state = 'requested', requested_at = $3"
            " WHERE order_id = $1 AND line_id = ANY($2::text[])",
            order_id,
            [r["line_id"] for r in lines],
            ctx.now,
        )
    return sum(len(v) for v in by_order.values())


class SupplyTicker(Ticker):
    """Publishes `supply.release_due` for every SKU with pre-order lines whose release date (the
    process's local date) came. One event id per SKU and day, so repeats from any instance are one
    (see `Ticker`)."""

    def __init__(self, *, tick_s: float = 30.0) -> None:
        super().__init__("reserve-supply", SUPPLY, tick_s=tick_s)

    async def scan(self, conn: asyncpg.Connection, now: datetime) -> list[Envelope]:
        day = now.astimezone().date()
        rows = await conn.fetch(
            "SELECT DISTINCT sku FROM reserve_waiting WHERE state = 'waiting' AND release_on <= $1", day
        )
        return [
            Envelope.new(
                SupplyReleaseDue(sku=r["sku"], day=day),
                source="orchestrator/reserve",
                event_id=str(uuid.uuid5(_TICK_IDS, f"{r['sku']}/{day}")),
                time=now,
            )
            for r in rows
        ]


_TICK_IDS = uuid.UUID("6f1c1a52-2f55-4a57-9b38-52f2f4d1e0a7")

__all__ = [
    "SupplyTicker",
    "forget_order",
    "record_inbound",
    "record_plan",
    "refresh_dates",
    "release_ready",
    "take_rechecks",
]
