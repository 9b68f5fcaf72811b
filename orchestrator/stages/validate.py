"""validate: is the order fit to route, and must it wait? Reads ingest's output.

Decides: rejection (with every reason), holds (from the OMS, and from policy
rules such as an order value threshold) and their release, and what goes on
to decide-node: a plan request, a re-plan after an amendment, or a cancel.
An order going on to be planned gets the lines the policy adds to it (free
samples, inserts, packaging; `orchestrator.domain.additions`), computed
afresh from the customer's lines each time, so a re-plan never adds twice.

Owns `validate_orders`: each order's verdict and open holds. Reads the
network view and the SKUs the reserve stage's ledger knows.
"""

from __future__ import annotations

import asyncio
import time

import orjson

from orchestrator.contract.common import OrderState, Reason
from orchestrator.contract.envelope import Envelope
from orchestrator.contract.orders import OrderCreated
from orchestrator.contract.pipeline import OrderChange, OrderIngested, OrderValidated
from orchestrator.domain.additions import add_lines
from orchestrator.domain.network import NetworkView
from orchestrator.domain.validation import Validation, stocked_skus, validate_order
from orchestrator.runtime.stage import HandlerContext, RejectEvent, Stage
from orchestrator.stages.common import (
    INGESTED,
    STATUS,
    VALIDATED,
    OrderPathDeps,
    emit_status,
    on_the_latest_network,
    order_json,
)

#: How long validate waits for reserve to apply a stock count before it calls a SKU unknown.
STOCK_CATCH_UP_S = 3.0
_STOCK_POLL_S = 0.1


def validate_stage(deps: OrderPathDeps) -> Stage:
    #: After a wait that found nothing new, orders are judged at once until then (monotonic seconds):
    #: a stream of orders for SKUs nobody stocks is not held up a wait each.
    no_wait_until = 0.0

    async def ledger_skus(ctx: HandlerContext, skus: list[str]) -> set[str]:
        rows = await ctx.db.fetch("SELECT DISTINCT sku FROM reserve_ledger WHERE sku = ANY($1::text[])", skus)
        return {r["sku"] for r in rows}

    async def known_skus(ctx: HandlerContext, order: OrderCreated) -> set[str]:
        """The order's SKUs reserve's ledger has a row for. An order's first count and the order
        often come moments apart on two topics (a new SKU, a storefront test); a rejection is final,
        so a SKU is called unknown only after reserve had a few seconds to apply a count behind it."""
        nonlocal no_wait_until
        wanted = sorted(stocked_skus(order))
        known = await ledger_skus(ctx, wanted)
        if len(known) == len(wanted) or time.monotonic() < no_wait_until:
            return known
        deadline = time.monotonic() + STOCK_CATCH_UP_S
        while time.monotonic() < deadline:
            await asyncio.sleep(_STOCK_POLL_S)
            # Each look is its own statement, so it sees what reserve committed meanwhile.
            known = await ledger_skus(ctx, wanted)
            if len(known) == len(wanted):
                return known
        no_wait_until = time.monotonic() + STOCK_CATCH_UP_S
        ctx.log.info("SKU still unknown after waiting for reserve", unknown=sorted(set(wanted) - known))
        return known

    async def save(
        ctx: HandlerContext,
        msg: OrderIngested,
        status: str,
        holds: tuple[str, ...],
        reasons: tuple[Reason, ...],
    ) -> None:
        await ctx.db.execute(
            "INSERT INTO validate_orders (order_id, sequence, status, holds, reasons, order_json)"
            " VALUES ($1, $2, $3, $4, $5, $6)"
            " ON CONFLICT (order_id) DO UPDATE SET sequence = $2, status = $3, holds = $4, reasons = $5,"
            " order_json = $6, updated_at = now()",
            msg.order_id,
            msg.sequence,
            status,
            list(holds),
            orjson.dumps([r.model_dump() for r in reasons]).decode(),
            order_json(msg.order),
        )

    def plan(ctx: HandlerContext, msg: OrderIngested, reason: str | None) -> None:
        # msg.order is the order as the OMS has it (ingest never sees an addition), so additions are
        # worked out from scratch on every (re-)plan and an amendment cannot add a line twice.
        added = add_lines(msg.order, deps.policy.additions)
        ctx.emit(
            VALIDATED,
            OrderValidated(
                order_id=msg.order_id, sequence=msg.sequence, action="plan", order=added.order, reason=reason
            ),
        )
        detail = "; ".join(part for part in (reason, added.summary()) if part) or None
        emit_status(ctx, msg.order_id, OrderState.VALIDATED, msg.sequence, detail=detail)

    def stop(ctx: HandlerContext, msg: OrderIngested, reason: str) -> None:
        """Tell decide-node the order stops, so whatever it holds downstream goes back."""
        ctx.emit(
            VALIDATED,
            OrderValidated(
                order_id=msg.order_id, sequence=msg.sequence, action="cancel", order=msg.order, reason=reason
            ),
        )

    async def check(ctx: HandlerContext, msg: OrderIngested, reason: str | None) -> None:
        skus = await known_skus(ctx, msg.order)

        async def judge(network: NetworkView) -> Validation:
            return validate_order(
                msg.order, network=network, known_skus=skus, policy=deps.policy, now=ctx.now
            )

        # A rejection is final: never for a pickup store or service the network view has not folded yet.
        verdict = await on_the_latest_network(deps.network, ctx.now, judge, lambda v: not v.valid)
        if not verdict.valid:
            await save(ctx, msg, "rejected", (), verdict.reasons)
            emit_status(
                ctx,
                msg.order_id,
                OrderState.REJECTED,
                msg.sequence,
                reasons=verdict.reasons,
                detail=f"{len(verdict.reasons)} problem(s) with the order",
            )
            if msg.change is OrderChange.AMENDED:
                # The amended order cannot be routed: whatever the earlier version holds must go back.
                stop(ctx, msg, "amended order is invalid")
            return
        if verdict.holds:
            await save(ctx, msg, "held", tuple(h.value for h in verdict.holds), ())
            reasons = tuple(
                Reason(code=h.value, message=f"on hold: {h.value.replace('_', ' ')}") for h in verdict.holds
            )
            emit_status(ctx, msg.order_id, OrderState.ON_HOLD, msg.sequence, reasons=reasons)
            return
        await save(ctx, msg, "validated", (), ())
        plan(ctx, msg, reason)

    async def handle(event: Envelope, ctx: HandlerContext) -> None:
        msg = event.data
        if not isinstance(msg, OrderIngested):  # pragma: no cover - `accepts` lets nothing else through
            raise RejectEvent(f"validate does not handle {event.type}")
        row = await ctx.db.fetchrow(
            "SELECT sequence, status, holds FROM validate_orders WHERE order_id = $1 FOR UPDATE", msg.order_id
        )
        if row is not None and msg.sequence <= row["sequence"]:
            return  # an older change, already superseded
        if msg.change is OrderChange.CREATED:
            await check(ctx, msg, None)
        elif msg.change is OrderChange.AMENDED:
            await check(ctx, msg, f"re-plan after amendment of {', '.join(msg.amended_fields)}")
        elif msg.change is OrderChange.CANCELLED:
            await save(ctx, msg, "cancelled", (), ())
            stop(ctx, msg, f"cancelled by the OMS ({msg.cancel_reason})")
            if row is None or row["status"] != "validated":
                # Never planned: nothing downstream holds anything, so the cancellation is final here.
                emit_status(
                    ctx,
                    msg.order_id,
                    OrderState.CANCELLED,
                    msg.sequence,
                    detail=f"cancelled by the OMS ({msg.cancel_reason})",
                )
        elif msg.change is OrderChange.HOLD_RELEASED:
            if row is None or row["status"] != "held":
                return  # nothing was held (or the order was rejected): releasing changes nothing
            remaining = tuple(h for h in row["holds"] if h != msg.released_hold)
            if remaining:
                await save(ctx, msg, "held", remaining, ())
                return
            await save(ctx, msg, "validated", (), ())
            plan(ctx, msg, f"hold {msg.released_hold} released by the OMS")

    return Stage(
        name="validate",
        inputs=(INGESTED,),
        outputs=(VALIDATED, STATUS),
        handler=handle,
        uses_database=True,
        accepts=frozenset({OrderIngested.event_type}),
        views=(deps.network,),
        description="checks orders, applies and releases holds",
    )
