"""status-sync: keeps the OMS told. Reads every stage's status events.

Decides: which stage reports are transitions (a state the order is not
already in) and their per-order sequence, so the OMS gets each transition
once, in order, with no gaps, on `oms.status.v1`. Once an order is
cancelled, rejected or delivered, later reports change nothing.

Owns `status_orders`: each order's current state and transition count.
"""

from __future__ import annotations

from orchestrator.contract.common import TERMINAL_STATES, OrderState
from orchestrator.contract.envelope import Envelope
from orchestrator.contract.pipeline import StageStatus
from orchestrator.contract.status import OrderStatusChanged
from orchestrator.runtime.stage import HandlerContext, RejectEvent, Stage
from orchestrator.stages.common import OMS_STATUS, STATUS


def is_transition(current: OrderState | None, new: OrderState) -> bool:
    """A report is a transition unless the order is there already or has ended."""
    if current is None:
        return True
    return current is not new and current not in TERMINAL_STATES


def status_sync_stage() -> Stage:
    async def handle(event: Envelope, ctx: HandlerContext) -> None:
        msg = event.data
        if not isinstance(msg, StageStatus):  # pragma: no cover - `accepts` lets nothing else through
            raise RejectEvent(f"status-sync does not handle {event.type}")
        row = await ctx.db.fetchrow(
            "SELECT state, sequence FROM status_orders WHERE order_id = $1 FOR UPDATE", msg.order_id
        )
        current = OrderState(row["state"]) if row else None
        if not is_transition(current, msg.state):
            return
        sequence = (row["sequence"] if row else 0) + 1
        await ctx.db.execute(
            "INSERT INTO status_orders (order_id, state, sequence) VALUES ($1, $2, $3)"
            " ON CONFLICT (order_id) DO UPDATE SET state = $2, sequence = $3, updated_at = now()",
            msg.order_id,
            msg.state.value,
            sequence,
        )
        ctx.emit(
            OMS_STATUS,
            OrderStatusChanged(
                order_id=msg.order_id,
                state=msg.state,
                previous_state=current,
                reasons=msg.reasons,
                sequence=sequence,
                occurred_at=msg.occurred_at,
            ),
        )

    return Stage(
        name="status-sync",
        inputs=(STATUS,),
        outputs=(OMS_STATUS,),
        handler=handle,
        uses_database=True,
        accepts=frozenset({StageStatus.event_type}),
        description="publishes each order state transition once, in order, to the OMS",
    )
