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

Owns `returns_cases`. Reads the order as ingest holds it (`ingest_orders`:
lines, prices, address, tier) and which SKUs each node stocks (reserve's
`reserve_ledger`); reads the network view. The policy is
`orchestrator/policies/returns.yaml` (`ORCHESTRATOR_RETURNS_POLICY_FILE`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import asyncpg

from orchestrator.contract.base import EventPayload
from orchestrator.contract.common import Address
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
    ReturnReceived,
    ReturnResolution,
    ReturnResolutionChanged,
    ReturnStatusChanged,
)
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
)
from orchestrator.domain.returns_policy import ReturnsPolicy, load_returns_policy
from orchestrator.runtime.stage import HandlerContext, RejectEvent, RetryLater, Stage
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
#: How long an event naming a return (or an order) not seen yet waits for it; shared with monitor.
EARLY_EVENT_WAIT_ENV = "ORCHESTRATOR_EARLY_EVENT_WAIT_S"

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


async def _load_order(conn: asyncpg.Connection, order_id: str) -> _Order | None:
    row = await conn.fetchrow(
        "SELECT order_json, sequence, cancelled FROM ingest_orders WHERE order_id = $1", order_id
    )
    if row is None:
        return None
    return _Order(OrderCreated.model_validate_json(row["order_json"]), row["sequence"], row["cancelled"])


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


def returns_stage(deps: OrderPathDeps, policy: ReturnsPolicy | None = None) -> Stage:
    """The returns stage; `policy` defaults to `load_returns_policy()` (the file or the packaged default)."""
    rules = policy if policy is not None else load_returns_policy()
    early_wait_s = float(os.environ.get(EARLY_EVENT_WAIT_ENV) or 10)

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
                raise RetryLater(
                    f"unknown return {return_id} of order {order_id}",
                    "unknown_return",
                    give_up_after_s=early_wait_s,
                )
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
        if stored.cancelled:
            raise RejectEvent(f"order {request.order_id} was cancelled: nothing was sent to return")
        others = await ctx.db.fetch(
            "SELECT case_json FROM returns_cases WHERE order_id = $1", request.order_id
        )
        already = units_in_live_returns([ReturnCase.model_validate_json(r["case_json"]) for r in others])
        lines = returned_lines(request, stored.order, already)
        where = await route(ctx, lines, request.resolution, request.method, request.store_id, stored.order)
        step = authorise(
            request,
            order=stored.order,
            order_sequence=stored.sequence,
            lines=lines,
            route=where,
            policy=rules,
            now=ctx.now,
        )
        await _save_case(ctx.db, apply(ctx, step))

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
            # Anything else on the observed exceptions topic is not about returns.
        except ReturnRefused as refused:
            raise RejectEvent(str(refused), "return_refused") from refused

    return Stage(
        name="returns",
        inputs=(OMS_RETURNS, RETURN_EVENTS, EXCEPTIONS),
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
            )
        ),
        views=(deps.network,),
        observes=frozenset({EXCEPTIONS}),
        description="routes returns, restocks what can be sold again, settles refunds, credits and exchanges",
    )


__all__ = ["OMS_RETURNS", "RETURN_EVENTS", "returns_stage"]
