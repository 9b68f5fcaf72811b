"""returns: returns and exchanges. Reads `oms.returns.v1` and `wms.return-events.v1`; observes
the exceptions topic for the outcome of exchange replacements.

Decides, for every return the OMS authorises:
- where the goods go (`orchestrator.domain.return_routing`): the nearest node
  able to receive and restock them, a store for a return brought in person,
  or nowhere (a refund without return below the policy's value); the return
  work order with its label request goes out on `wms.work-orders.v1`;
- when the customer is settled: a refund or store credit once the goods are
  received (at once without return); an exchange's replacement goes through
  decide-node, reserve and release as a repair on `orchestrator.reroutes.v1`,
  at once or after receipt by policy, and release's outcome comes back on the
  exceptions topic;
- what goes back into stock: restockable units as `inventory.delta.v1`
  (reason `return`) on `inventory.updates.v1`, which reserve applies to the
  ledger at the receiving node; the rest does not;
- what a change of resolution (or a cancellation) stops and starts.
Every transition goes to status-sync as `return.status_changed.v1`, which
publishes it on `oms.status.v1` and keeps it in the order's story.

A node's event about a return whose authorisation has not reached us yet (a
store takes goods back the moment the customer walks in; the OMS's
authorisation travels on another topic) is parked, not waited for: kept as it
arrived, with its offset committed, so the partition goes on. The
authorisation's handler replays it; the ticker asks for those still waiting
after the park limit to be dead-lettered (`orchestrator.returns.timers.v1`).
An authorisation of a cancelled order none of whose work monitor has seen
leave is parked the same way: the cancellation may have come too late at the
node, and monitor may be behind. The ticker asks for it to be handled as soon
as monitor has seen a shipment of the order, and for it to be dead-lettered
(`order_cancelled`) when none has been seen by the park limit.

Owns `returns_cases` and `returns_parked_events`. Reads the order as ingest holds it (`ingest_orders`:
lines, prices, address, tier), which SKUs each node stocks (reserve's
`reserve_ledger`) and, for a cancelled order, whether any of its work shipped anyway (monitor's
`monitor_shipments`); reads the network view. The policy is
`orchestrator/policies/returns.yaml` (`ORCHESTRATOR_RETURNS_POLICY_FILE`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
import orjson

from orchestrator.contract.base import EventPayload
from orchestrator.contract.common import Address, OrderLine
from orchestrator.contract.envelope import Envelope
from orchestrator.contract.inventory import InventoryDelta
from orchestrator.contract.orders import OrderCreated
from orchestrator.contract.pipeline import RedecideRequested, RepairOutcome
from orchestrator.contract.returns import (
    ReturnAuthorised,
    ReturnCancelled,
    ReturnInspected,
    ReturnMethod,
    ReturnOrderCancelRequested,
    ReturnOrderReleased,
    ReturnParkedExpired,
    ReturnReceived,
    ReturnResolution,
    ReturnResolutionChanged,
    ReturnStatusChanged,
)
from orchestrator.domain.monitoring import LEFT_NODE
from orchestrator.domain.return_routing import ReturnedLine, ReturnRoute, Unroutable, route_return
from orchestrator.domain.returns import (
    ReturnCase,
    ReturnRefused,
    Step,
    authorise,
    cancel,
    change_resolution,
    inspect,
    parse_replacement_id,
    receive,
    replacement_outcome,
    returned_lines,
    units_in_live_returns,
    with_shipped_removed_lines,
)
from orchestrator.domain.returns_policy import ReturnsPolicy, load_returns_policy
from orchestrator.runtime.parking import (
    RECORD_COLUMNS,
    ParkedRecord,
    lock_parking,
    park,
    parked_gauge,
    replay,
    take_expired,
    waited,
)
from orchestrator.runtime.stage import HandlerContext, RejectEvent, RetryLater, Stage
from orchestrator.runtime.ticker import Ticker
from orchestrator.settings import env_seconds
from orchestrator.stages.common import (
    EXCEPTIONS,
    INVENTORY_UPDATES,
    REROUTES,
    STATUS,
    WORK_ORDERS,
    OrderPathDeps,
)

OMS_RETURNS = "oms.returns.v1"
RETURN_EVENTS = "wms.return-events.v1"
RETURNS_TIMERS = "orchestrator.returns.timers.v1"
#: How long an authorisation or a resolution change naming an order ingest has not seen yet holds its
#: partition waiting for it (seconds).
EARLY_EVENT_WAIT_ENV = "ORCHESTRATOR_EARLY_EVENT_WAIT_S"
#: How long a node's event about a return not authorised yet stays parked before it is dead-lettered
#: (seconds). Long: a parked event holds nothing up.
PARK_LIMIT_ENV = "ORCHESTRATOR_RETURNS_PARK_LIMIT_S"
DEFAULT_PARK_LIMIT = timedelta(hours=1)
_SOURCE = "orchestrator/returns"

#: Where each kind of event the core produces goes.
_TOPIC_OF: dict[type[EventPayload], str] = {
    ReturnOrderReleased: WORK_ORDERS,
    ReturnOrderCancelRequested: WORK_ORDERS,
    InventoryDelta: INVENTORY_UPDATES,
    RedecideRequested: REROUTES,
    ReturnStatusChanged: STATUS,
}


@dataclass(frozen=True, slots=True)
class _Order:
    order: OrderCreated
    sequence: int
    cancelled: bool
    #: Lines amendments removed, as they were (see `with_shipped_removed_lines`).
    removed: tuple[OrderLine, ...] = ()


async def _any_shipped(conn: asyncpg.Connection, order_id: str) -> bool:
    """Whether any of the order's work left its node, as monitor saw it (read, never written)."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM monitor_shipments WHERE order_id = $1 AND state = ANY($2::text[]))",
            order_id,
            sorted(LEFT_NODE),
        )
    )


async def _load_order(conn: asyncpg.Connection, order_id: str) -> _Order | None:
    row = await conn.fetchrow(
        "SELECT order_json, sequence, cancelled, removed_lines FROM ingest_orders WHERE order_id = $1",
        order_id,
    )
    if row is None:
        return None
    removed = tuple(OrderLine.model_validate(line) for line in orjson.loads(row["removed_lines"]))
    return _Order(
        OrderCreated.model_validate_json(row["order_json"]), row["sequence"], row["cancelled"], removed
    )


async def _shipped_units(conn: asyncpg.Connection, order_id: str) -> dict[str, int]:
    """Units of each of the order's lines that left a node, as monitor saw it (read, never written)."""
    rows = await conn.fetch(
        "SELECT l.line_id, sum(l.quantity)::int AS units FROM monitor_shipments m,"
        " jsonb_to_recordset(m.lines) AS l(line_id text, quantity int)"
        " WHERE m.order_id = $1 AND m.state = ANY($2::text[]) GROUP BY l.line_id",
        order_id,
        sorted(LEFT_NODE),
    )
    return {r["line_id"]: r["units"] for r in rows}


async def _load_case(conn: asyncpg.Connection, return_id: str) -> ReturnCase | None:
    raw = await conn.fetchval(
        "SELECT case_json FROM returns_cases WHERE return_id = $1 FOR UPDATE", return_id
    )
    return None if raw is None else ReturnCase.model_validate_json(raw)


async def _save_case(conn: asyncpg.Connection, case: ReturnCase) -> None:
    await conn.execute(
        "INSERT INTO returns_cases (return_id, order_id, state, case_json) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (return_id) DO UPDATE SET state = $3, case_json = $4, updated_at = now()",
        case.return_id,
        case.order_id,
        case.state.value,
        case.model_dump_json(),
    )


async def _stocked(conn: asyncpg.Connection, skus: list[str]) -> frozenset[tuple[str, str]]:
    rows = await conn.fetch("SELECT node_id, sku FROM reserve_ledger WHERE sku = ANY($1::text[])", skus)
    return frozenset((r["node_id"], r["sku"]) for r in rows)


def park_limit_from_env(env: Mapping[str, str] | None = None) -> timedelta:
    """ORCHESTRATOR_RETURNS_PARK_LIMIT_S, or an hour."""
    return env_seconds(os.environ if env is None else env, PARK_LIMIT_ENV) or DEFAULT_PARK_LIMIT


# ------------------------------------------------------------------------------------------- parking


class _Early(Exception):
    """An event about a return came before what it needs: parked (raised before anything changed)."""

    def __init__(self, return_id: str, order_id: str, waits_for: str) -> None:
        super().__init__(f"return {return_id} of order {order_id} waits for {waits_for}")
        self.return_id = return_id
        self.order_id = order_id
        self.waits_for = waits_for


class _NotAuthorisedYet(_Early):
    """A node's event names a return we have no case of."""

    def __init__(self, return_id: str, order_id: str) -> None:
        super().__init__(return_id, order_id, "its authorisation")


class _NotShippedYet(_Early):
    """The OMS authorises a return of goods monitor has not seen leave: of a cancelled order none of
    whose work it has seen leave, or of a line an amendment removed that it has not seen ship.

    The cancellation or amendment may have reached the node after the work left, and monitor
    (another stage, which may be minutes behind) not have heard yet: the authorisation waits for a
    shipment of the order, and is dead-lettered only when none has been seen by the park limit.
    """

    def __init__(self, return_id: str, order_id: str) -> None:
        super().__init__(return_id, order_id, "a shipment of the order")


#: returns' own space of two-key advisory locks (monitor's is 0x4D4F4E).
_PARKING_LOCK_SPACE = 0x524554  # "RET"
_PARKED_COLUMNS = f"event_id, return_id, order_id, event_type, {RECORD_COLUMNS}, parked_at"


async def _park(ctx: HandlerContext, early: _Early) -> None:
    waits_on = {"return_id": early.return_id, "order_id": early.order_id}
    await park(ctx, "returns_parked_events", "returns", waits_on)
    ctx.log.info(f"parked until {early.waits_for} is seen", return_id=early.return_id)


async def _unpark(conn: asyncpg.Connection, event_id: str) -> None:
    await conn.execute("DELETE FROM returns_parked_events WHERE event_id = $1", event_id)


_EXPIRED_PARKED_SQL = """
SELECT event_id, return_id, order_id, parked_at FROM returns_parked_events
 WHERE parked_at <= $1 ORDER BY parked_at LIMIT $2
"""

#: Parked authorisations whose order's work monitor has since seen leave a node, with how many of
#: its work orders left: a parked return asks again each time one more does.
_SHIPPED_PARKED_SQL = """
SELECT p.event_id, p.return_id, p.order_id, p.parked_at, s.shipped FROM returns_parked_events p
 CROSS JOIN LATERAL (SELECT count(*) AS shipped FROM monitor_shipments m
   WHERE m.order_id = p.order_id AND m.state = ANY($2::text[])) s
 WHERE p.event_type = $1 AND s.shipped > 0
 ORDER BY p.parked_at LIMIT $3
"""


class ParkingTicker(Ticker):
    """Asks returns to dead-letter every parked event past the park limit
    (`returns.parked_expired.v1`), and keeps the parked events' gauges (see `Ticker`)."""

    def __init__(self, park_limit: timedelta, *, tick_s: float = 1.0, batch: int = 5000) -> None:
        super().__init__("returns-parking", RETURNS_TIMERS, tick_s=tick_s)
        self.park_limit = park_limit
        #: Rows read per tick.
        self.batch = batch

    async def scan(self, conn: asyncpg.Connection, now: datetime) -> list[Envelope]:
        if self._metrics is not None:
            parked, oldest_s = await parked_gauge(conn, "returns_parked_events", now)
            self._metrics.returns_parked_events.set(parked)
            self._metrics.returns_parked_oldest_seconds.set(oldest_s)
        envelopes: list[Envelope] = []
        expired = await conn.fetch(_EXPIRED_PARKED_SQL, now - self.park_limit, self.batch)
        shipped = await conn.fetch(
            _SHIPPED_PARKED_SQL, ReturnAuthorised.event_type, sorted(LEFT_NODE), self.batch
        )
        for why, rows in (("expired", expired), ("shipped", shipped)):
            for r in rows:
                due = ReturnParkedExpired(
                    order_id=r["order_id"],
                    return_id=r["return_id"],
                    parked_event_id=r["event_id"],
                    parked_at=r["parked_at"],
                    # A shipment seen is no expiry: one that does not settle the wait leaves it parked.
                    due_at=r["parked_at"] + self.park_limit if why == "expired" else now,
                )
                # One id per parked event and reason: repeats from every tick and instance are one
                # request, and a wait that ends early does not take the id of its expiry.
                eid = f"returns-parked-{why}:{r['event_id']}"
                if why == "shipped":
                    eid += f":{r['shipped']}"
                envelopes.append(Envelope.new(due, source=_SOURCE, event_id=eid, time=now))
        return envelopes


# --------------------------------------------------------------------------------------------- stage


def returns_stage(
    deps: OrderPathDeps, policy: ReturnsPolicy | None = None, park_limit: timedelta | None = None
) -> Stage:
    """The returns stage; `policy` defaults to `load_returns_policy()` (the file or the packaged default),
    `park_limit` to ORCHESTRATOR_RETURNS_PARK_LIMIT_S or an hour."""
    rules = policy if policy is not None else load_returns_policy()
    early_wait_s = float(os.environ.get(EARLY_EVENT_WAIT_ENV) or 10)
    limit = park_limit if park_limit is not None else park_limit_from_env()
    ticker = ParkingTicker(limit)

    def origin(order: OrderCreated) -> Address | None:
        """Where the goods are now: the customer's address, or the store a BOPIS order was collected at."""
        if order.ship_to is not None:
            return order.ship_to
        delivery = order.delivery
        if delivery.kind == "bopis":
            node = deps.network.state.nodes.get(delivery.pickup_store_id)
            return node.location if node is not None else None
        return None

    async def route(
        ctx: HandlerContext,
        lines: tuple[ReturnedLine, ...],
        resolution: ReturnResolution,
        method: ReturnMethod,
        store_id: str | None,
        order: OrderCreated,
    ) -> ReturnRoute | Unroutable:
        return route_return(
            lines=lines,
            resolution=resolution,
            method=method,
            store_id=store_id,
            origin=origin(order),
            network=deps.network.state,
            stocked=await _stocked(ctx.db, sorted({line.sku for line in lines})),
            policy=rules,
            now=ctx.now,
        )

    async def order_of(ctx: HandlerContext, order_id: str) -> _Order:
        order = await _load_order(ctx.db, order_id)
        if order is None:
            # The order travels on another topic and may not be ingested yet: wait a little.
            raise RetryLater(
                f"unknown order {order_id}: ingest has not seen it",
                "unknown_order",
                give_up_after_s=early_wait_s,
            )
        return order

    async def case_of(ctx: HandlerContext, return_id: str, order_id: str) -> ReturnCase:
        case = await _load_case(ctx.db, return_id)
        if case is None:
            if ctx.topic == RETURN_EVENTS:
                # A node may report goods before the authorisation (another topic) reached us.
                raise _NotAuthorisedYet(return_id, order_id)
            raise RejectEvent(f"unknown return {return_id} of order {order_id}", "unknown_return")
        if case.order_id != order_id:
            raise RejectEvent(f"return {return_id} belongs to order {case.order_id}, not {order_id}")
        return case

    def apply(ctx: HandlerContext, step: Step) -> ReturnCase:
        for event in step.events:
            ctx.emit(_TOPIC_OF[type(event)], event)
        if step.note:
            ctx.log.info(step.note, return_id=step.case.return_id)
        return step.case

    async def on_authorised(ctx: HandlerContext, request: ReturnAuthorised) -> None:
        if await _load_case(ctx.db, request.return_id) is not None:
            raise RejectEvent(f"return {request.return_id} is already authorised", "duplicate_return")
        stored = await order_of(ctx, request.order_id)
        if stored.cancelled and not await _any_shipped(ctx.db, request.order_id):
            # A cancellation can reach the node after its work left: those goods can come back. The
            # shipment may not have reached monitor yet: park until it has, or the park limit.
            raise _NotShippedYet(request.return_id, request.order_id)
        order = stored.order
        have = {line.line_id for line in order.lines}
        gone = {x.line_id for x in request.lines} - have
        if gone and gone <= {line.line_id for line in stored.removed}:
            # An amendment removed the line; the node may have shipped it before the removal came.
            order = with_shipped_removed_lines(
                order, stored.removed, await _shipped_units(ctx.db, order.order_id)
            )
            if not gone <= {line.line_id for line in order.lines}:
                raise _NotShippedYet(request.return_id, request.order_id)
        others = await ctx.db.fetch(
            "SELECT case_json FROM returns_cases WHERE order_id = $1", request.order_id
        )
        already = units_in_live_returns([ReturnCase.model_validate_json(r["case_json"]) for r in others])
        lines = returned_lines(request, order, already)
        where = await route(ctx, lines, request.resolution, request.method, request.store_id, order)
        step = authorise(
            request,
            order=order,
            order_sequence=stored.sequence,
            lines=lines,
            route=where,
            policy=rules,
            now=ctx.now,
        )
        await _save_case(ctx.db, apply(ctx, step))
        # Held to commit: a node event of this return parked concurrently on another partition is
        # either committed before this looks, or finds the case when it looks again under the lock.
        await lock_parking(ctx.db, _PARKING_LOCK_SPACE, request.return_id)
        await replay_parked(ctx, request.return_id)

    async def replay_parked(ctx: HandlerContext, return_id: str) -> None:
        """Handle the return's parked node events, in arrival order, now that it is authorised."""
        for row in await ctx.db.fetch(
            f"SELECT {_PARKED_COLUMNS} FROM returns_parked_events WHERE return_id = $1 AND event_id <> $2"
            " ORDER BY arrival",
            return_id,
            ctx.event.id,  # a parked authorisation being replayed is not its own node event
        ):
            # The case exists now, so none can still be waiting for it.
            await replay(ctx, row, dispatch, still_waiting=_Early, unpark=lambda eid: _unpark(ctx.db, eid))

    async def on_parked_expired(ctx: HandlerContext, msg: ReturnParkedExpired) -> None:
        await lock_parking(ctx.db, _PARKING_LOCK_SPACE, msg.return_id)
        parked = await ctx.db.fetchrow(
            f"SELECT {_PARKED_COLUMNS} FROM returns_parked_events WHERE event_id = $1", msg.parked_event_id
        )
        authorisation = parked is not None and parked["event_type"] == ReturnAuthorised.event_type
        # An authorisation whose order's work has been seen leaving since goes ahead now.
        if (
            parked is not None
            and authorisation
            and await replay(ctx, parked, dispatch, still_waiting=_Early, unpark=lambda e: _unpark(ctx.db, e))
        ):
            return
        row = await take_expired(
            ctx, "returns_parked_events", _PARKED_COLUMNS, msg.parked_event_id, limit=limit, due_at=msg.due_at
        )
        if row is not None and authorisation:
            stored = await _load_order(ctx.db, row["order_id"])
            seen = f"no shipment seen in {waited(row['parked_at'], ctx.now)}, park limit {limit}"
            if stored is not None and stored.cancelled:
                category = "order_cancelled"
                why = (
                    f"order {row['order_id']} was cancelled and nothing of it has shipped: nothing to return"
                )
            else:
                category = "return_refused"
                why = (
                    f"return {row['return_id']} names lines an amendment removed from order {row['order_id']}"
                )
            ctx.dead_letter(ParkedRecord.from_row(row), category, f"{why} ({seen})")
        elif row is not None:
            ctx.dead_letter(
                ParkedRecord.from_row(row),
                "unknown_return",
                f"unknown return {row['return_id']} of order {row['order_id']}: it was never authorised;"
                f" the {row['event_type']} event waited {waited(row['parked_at'], ctx.now)} for it"
                f" (park limit {limit})",
            )

    async def on_change(ctx: HandlerContext, change: ReturnResolutionChanged) -> None:
        case = await case_of(ctx, change.return_id, change.order_id)
        stored = await order_of(ctx, change.order_id)
        case = case.model_copy(update={"order_sequence": stored.sequence})
        where = await route(ctx, case.lines, change.resolution, case.method, case.store_id, stored.order)
        step = change_resolution(case, change, order=stored.order, route=where, policy=rules, now=ctx.now)
        await _save_case(ctx.db, apply(ctx, step))

    async def on_node_event(ctx: HandlerContext, event: ReturnReceived | ReturnInspected) -> None:
        case = await case_of(ctx, event.return_id, event.order_id)
        stored = await order_of(ctx, event.order_id)
        case = case.model_copy(update={"order_sequence": stored.sequence})
        if isinstance(event, ReturnReceived):
            step = receive(case, event, order=stored.order, policy=rules, now=ctx.now)
        else:
            step = inspect(case, event, order=stored.order, policy=rules, now=ctx.now)
        await _save_case(ctx.db, apply(ctx, step))

    async def on_outcome(ctx: HandlerContext, outcome: RepairOutcome) -> None:
        parsed = parse_replacement_id(outcome.exception_id)
        if parsed is None:
            return  # a playbook's repair: the exceptions stage's business
        return_id, attempt = parsed
        case = await _load_case(ctx.db, return_id)
        if case is None:
            ctx.log.warning("replacement outcome for an unknown return", return_id=return_id)
            return
        await _save_case(ctx.db, apply(ctx, replacement_outcome(case, outcome, attempt, now=ctx.now)))

    async def handle(event: Envelope, ctx: HandlerContext) -> None:
        try:
            await dispatch(event, ctx)
            return
        except _Early as early:
            return_id = early.return_id
        # The authorisation may be committing on another partition right now: look again under the
        # return's parking lock. Either its case is there now, or its handler will find this parked.
        await lock_parking(ctx.db, _PARKING_LOCK_SPACE, return_id)
        try:
            await dispatch(event, ctx)
        except _Early as early:
            await _park(ctx, early)

    async def dispatch(event: Envelope, ctx: HandlerContext) -> None:
        data = event.data
        try:
            if isinstance(data, ReturnAuthorised):
                await on_authorised(ctx, data)
            elif isinstance(data, ReturnResolutionChanged):
                await on_change(ctx, data)
            elif isinstance(data, ReturnCancelled):
                case = await case_of(ctx, data.return_id, data.order_id)
                await _save_case(ctx.db, apply(ctx, cancel(case, data, now=ctx.now)))
            elif isinstance(data, (ReturnReceived, ReturnInspected)):
                await on_node_event(ctx, data)
            elif isinstance(data, RepairOutcome):
                await on_outcome(ctx, data)
            elif isinstance(data, ReturnParkedExpired):
                await on_parked_expired(ctx, data)
            # Anything else on the observed exceptions topic is not about returns.
        except ReturnRefused as refused:
            raise RejectEvent(str(refused), "return_refused") from refused

    return Stage(
        name="returns",
        inputs=(OMS_RETURNS, RETURN_EVENTS, EXCEPTIONS, RETURNS_TIMERS),
        outputs=(WORK_ORDERS, INVENTORY_UPDATES, REROUTES, STATUS),
        handler=handle,
        uses_database=True,
        accepts=frozenset(
            m.event_type
            for m in (
                ReturnAuthorised,
                ReturnResolutionChanged,
                ReturnCancelled,
                ReturnReceived,
                ReturnInspected,
                ReturnParkedExpired,
            )
        ),
        views=(deps.network, ticker),
        observes=frozenset({EXCEPTIONS}),
        description="routes returns, restocks what can be sold again, settles refunds, credits and exchanges",
    )


__all__ = [
    "OMS_RETURNS",
    "PARK_LIMIT_ENV",
    "RETURNS_TIMERS",
    "RETURN_EVENTS",
    "ParkingTicker",
    "park_limit_from_env",
    "returns_stage",
]
