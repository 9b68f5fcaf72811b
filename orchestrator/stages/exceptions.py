"""exceptions: what happens next when an order's plan fails. Reads `orchestrator.exceptions.v1`.

Decides, for every exception another stage raises (a short pick, a node that
closed, a parcel the carrier lost...), which action of its kind's playbook
(`orchestrator/policies/playbooks.yaml`) to take, in order, until one
resolves it:
- re-planning actions (reroute, split, rebook_faster) go through the order
  path as a `RedecideRequested` with a `Repair` on `orchestrator.reroutes.v1`;
  the case waits for decide-node/reserve/release to answer with a
  `RepairOutcome` on the exceptions topic, and a failure moves on to the next
  action;
- local actions (backorder, hold_for_review, notify_new_date, offer_options,
  cancel_line_refund) take effect at once: a status for the OMS on
  `orchestrator.status.v1`, a message on `customer.notifications.v1`, or a row
  in the review queue.
An exception no action could resolve ends in the review queue with what was
tried, so nothing is left waiting where nobody looks.

Owns `exceptions_cases` (one per exception id: a repeated exception changes
nothing) and `exceptions_review_queue`. Reads the order as it stands and its
customer from ingest's `ingest_orders`, and a failing work order's lines from
release's `release_work_orders` when the exception does not state them.

Counts, once the batch commits, every case opened (by kind) and every case its playbook finished
with (by kind and resolution); `UnresolvedCases` reports the cases still unresolved, read from the
table, as gauges.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import structlog

from orchestrator.contract.common import OrderState, Reason, SkuLine
from orchestrator.contract.envelope import Envelope
from orchestrator.contract.orders import OrderCreated
from orchestrator.contract.pipeline import RedecideRequested, RepairOutcome
from orchestrator.contract.status import ExceptionKind, ExceptionRaised
from orchestrator.contract.work import WorkOrderReleased
from orchestrator.domain.exception_handling import (
    EXHAUSTED,
    Attempt,
    NotApplicable,
    affected_lines,
    backorder_repair,
    build_redecide,
    describe_lines,
    exhausted_reason,
    new_date_notification,
    new_delivery_date,
    next_action,
    options_notification,
    refund_notification,
    refund_reason,
)
from orchestrator.domain.playbooks import PIPELINE_ACTIONS, PlaybookAction, Playbooks, load_playbooks
from orchestrator.runtime.measures import StageMeasures
from orchestrator.runtime.metrics import RuntimeMetrics
from orchestrator.runtime.periodic import read_periodically
from orchestrator.runtime.stage import HandlerContext, RejectEvent, Stage
from orchestrator.runtime.views import cancel_task
from orchestrator.settings import Settings
from orchestrator.stages.common import EXCEPTIONS, REROUTES, STATUS, OrderPathDeps, emit_status
from orchestrator.stages.status_sync import CUSTOMER_NOTIFICATIONS

#: Longest reason text a status event carries (the contract's `Text`).
_MAX_TEXT = 2000

#: The `resolution` of a case handed to a person, and of one whose order was cancelled meanwhile.
MANUAL_REVIEW, ORDER_CANCELLED = "manual_review", "order_cancelled"
#: The states of a case not resolved (the `state` label of the unresolved gauges).
UNRESOLVED_STATES = ("open", "in_review")
#: How often `UnresolvedCases` reads the table (seconds).
GAUGE_INTERVAL_ENV = "ORCHESTRATOR_EXCEPTIONS_GAUGE_S"
DEFAULT_GAUGE_INTERVAL_S = 10.0


@dataclass(frozen=True, slots=True)
class _Order:
    """The order as ingest holds it now."""

    order: OrderCreated
    sequence: int
    cancelled: bool


@dataclass
class _Case:
    """One exception's case while a handler works on it; saved once at the end of the handler."""

    exception: ExceptionRaised
    attempts: list[Attempt] = field(default_factory=list)
    state: str = "open"
    current_action: PlaybookAction | None = None
    resolution: str | None = None

    def resolve(self, resolution: str) -> None:
        self.state = "resolved"
        self.resolution = resolution

    def ending(self) -> str:
        """How the playbook finished with the case, in a word (the counters' `resolution`): the
        action that resolved it, or why none did."""
        if self.state == "in_review":
            return MANUAL_REVIEW
        succeeded = [a.action.value for a in self.attempts if a.succeeded]
        # Resolved with no action that succeeded: only a cancelled order ends a case that way.
        return succeeded[-1] if succeeded else ORDER_CANCELLED


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


async def _load_order(conn: asyncpg.Connection, order_id: str) -> _Order | None:
    row = await conn.fetchrow(
        "SELECT order_json, sequence, cancelled FROM ingest_orders WHERE order_id = $1", order_id
    )
    if row is None:
        return None
    return _Order(OrderCreated.model_validate_json(row["order_json"]), row["sequence"], row["cancelled"])


async def _work_order_lines(conn: asyncpg.Connection, exception: ExceptionRaised) -> tuple[SkuLine, ...]:
    """The failing work order's lines, for exceptions that name the work order but not the quantities."""
    if exception.unfilled or exception.work_order_id is None:
        return ()
    raw = await conn.fetchval(
        "SELECT payload FROM release_work_orders WHERE work_order_id = $1", exception.work_order_id
    )
    if raw is None:
        return ()
    work_order = WorkOrderReleased.model_validate_json(raw)
    return tuple(SkuLine(line_id=w.line_id, sku=w.sku, quantity=w.quantity) for w in work_order.lines)


async def _save(conn: asyncpg.Connection, case: _Case, now: datetime) -> None:
    await conn.execute(
        "UPDATE exceptions_cases SET state = $2, actions_tried = $3, current_action = $4,"
        " resolved_at = $5, resolution = $6 WHERE exception_id = $1",
        case.exception.exception_id,
        case.state,
        orjson.dumps([a.to_json() for a in case.attempts]).decode(),
        case.current_action.value if case.current_action else None,
        None if case.state == "open" else now,
        case.resolution,
    )


async def review_queue(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """The open manual-review queue, oldest first: exception_id, order_id, kind, reason, queued_at."""
    rows = await conn.fetch(
        "SELECT exception_id, order_id, kind, reason, queued_at FROM exceptions_review_queue"
        " WHERE resolved_at IS NULL ORDER BY queued_at, exception_id"
    )
    return [dict(r) for r in rows]


_UNRESOLVED_SQL = """
SELECT state, count(*) AS cases, min(opened_at) AS oldest FROM exceptions_cases
 WHERE state <> 'resolved' GROUP BY state
"""


def _prepare_metrics(m: RuntimeMetrics) -> None:
    for kind in ExceptionKind:
        m.exceptions_opened.labels(kind.value)


class UnresolvedCases(StageMeasures):
    """Reports the cases not resolved, per state, every `interval_s` (a View, for its life cycle),
    and is the stage's hold on the process's metrics for the counters its handler increments.

    Read from the table, not counted: a gauge kept by counting would start at zero in every new
    process, while the table is the truth every instance shares (a partial index keeps the read
    to the unresolved rows: migration 0012). Never holds the stage back from being ready: only
    a gauge depends on it.
    """

    def __init__(self, interval_s: float | None = None) -> None:
        super().__init__("exceptions-unresolved", _prepare_metrics)
        self.interval_s = (
            interval_s
            if interval_s is not None
            else float(os.environ.get(GAUGE_INTERVAL_ENV, DEFAULT_GAUGE_INTERVAL_S))
        )
        self.log = structlog.get_logger("orchestrator.exceptions.gauge")
        self._task: asyncio.Task[None] | None = None

    def count_case(self, ctx: HandlerContext, kind: str, *, opened: bool, ending: str | None) -> None:
        """Count a case opened and/or finished with, once the batch commits."""

        def count(m: RuntimeMetrics) -> None:
            if opened:
                m.exceptions_opened.labels(kind).inc()
            if ending is not None:
                m.exceptions_resolved.labels(kind, ending).inc()

        self.count(ctx, count)

    async def start(self, settings: Settings, stop: asyncio.Event) -> None:
        # Nothing to report to without metrics (a stage built outside a process).
        if self._task is None and self.metrics is not None:
            reading = read_periodically(
                settings,
                stop,
                self.refresh,
                self.interval_s,
                what="reading the unresolved exceptions",
                log=self.log,
            )
            self._task = asyncio.create_task(reading, name="exceptions:unresolved")

    async def close(self) -> None:
        await cancel_task(self._task)
        self._task = None

    async def refresh(self, conn: asyncpg.Connection, now: datetime | None = None) -> None:
        m = self.metrics
        if m is None:
            return
        now = now or datetime.now(UTC)
        rows = {r["state"]: r for r in await conn.fetch(_UNRESOLVED_SQL)}
        for state in UNRESOLVED_STATES:
            row = rows.get(state)
            m.exceptions_unresolved.labels(state).set(row["cases"] if row else 0)
            oldest = row["oldest"] if row else None
            m.exceptions_unresolved_oldest_seconds.labels(state).set(
                max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
            )


def exceptions_stage(deps: OrderPathDeps, playbooks: Playbooks | None = None) -> Stage:
    """The exceptions stage; `playbooks` defaults to `load_playbooks()` (the file or the packaged default)."""
    del deps  # the playbooks need neither the network nor the routing policy
    book = playbooks if playbooks is not None else load_playbooks()
    cases = UnresolvedCases()

    async def to_review(ctx: HandlerContext, case: _Case, order: _Order | None, reason: str) -> None:
        exc = case.exception
        await ctx.db.execute(
            "INSERT INTO exceptions_review_queue (exception_id, order_id, kind, reason, queued_at)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (exception_id) DO NOTHING",
            exc.exception_id,
            exc.order_id,
            exc.kind.value,
            reason,
            ctx.now,
        )
        case.state = "in_review"
        case.resolution = reason
        ctx.log.warning("exception queued for review", exception_id=exc.exception_id, reason=reason)
        if order is not None:  # without ingest's order there is no sequence to report a status under
            emit_status(
                ctx,
                exc.order_id,
                OrderState.NEEDS_ATTENTION,
                order.sequence,
                reasons=(Reason(code=exc.kind.value, message=_clip(reason)),),
                detail="an exception waits for manual review",
            )

    async def run_local(
        ctx: HandlerContext, case: _Case, order: _Order, action: PlaybookAction, lines: tuple[SkuLine, ...]
    ) -> None:
        """Carry out an action that needs nothing from the order path. Checks come before any emit,
        so an action that turns out not to apply has said nothing."""
        exc = case.exception
        kind_reason = Reason(code=exc.kind.value, message=exc.detail)
        if action is PlaybookAction.BACKORDER:
            detail = f"waiting for stock: {describe_lines(lines)}" if lines else "waiting for stock"
            # status-sync tells the customer on the move to back_ordered: a message here would be a second.
            emit_status(
                ctx,
                exc.order_id,
                OrderState.BACK_ORDERED,
                order.sequence,
                reasons=(kind_reason,),
                detail=_clip(detail),
            )
            if lines:
                # The lines join their SKUs' queues in reserve (through a plan of just them, which may
                # also find stock that came meanwhile), so they are planned when their supply arrives.
                ctx.emit(
                    REROUTES,
                    RedecideRequested(
                        order_id=exc.order_id,
                        sequence=order.sequence,
                        attempt=1,
                        order=order.order,
                        reason=kind_reason,
                        repair=backorder_repair(exc, lines),
                    ),
                )
            case.attempts.append(Attempt(action, True, detail))
            case.resolve(f"back-ordered: {detail}")
        elif action is PlaybookAction.HOLD_FOR_REVIEW:
            case.attempts.append(Attempt(action, True, "queued for manual review"))
            await to_review(ctx, case, order, f"{exc.kind.value}: {exc.detail}")
        elif action is PlaybookAction.NOTIFY_NEW_DATE:
            new_date = new_delivery_date(exc, case.attempts)
            if new_date is None:
                raise NotApplicable("no new delivery date is known")
            ctx.emit(CUSTOMER_NOTIFICATIONS, new_date_notification(order.order, new_date))
            case.attempts.append(Attempt(action, True, f"customer told the new date {new_date}", new_date))
            case.resolve(f"customer told the new delivery date {new_date.isoformat()}")
        elif action is PlaybookAction.OFFER_OPTIONS:
            ctx.emit(CUSTOMER_NOTIFICATIONS, options_notification(order.order, lines))
            emit_status(
                ctx,
                exc.order_id,
                OrderState.NEEDS_ATTENTION,
                order.sequence,
                reasons=(kind_reason,),
                detail="options offered to the customer; waiting for their choice",
            )
            case.attempts.append(Attempt(action, True, "options offered to the customer"))
            case.resolve("options offered to the customer")
        elif action is PlaybookAction.CANCEL_LINE_REFUND:
            if not lines:
                raise NotApplicable("the exception names no line to refund")
            emit_status(
                ctx,
                exc.order_id,
                OrderState.NEEDS_ATTENTION,
                order.sequence,
                reasons=(refund_reason(lines),),
                detail=_clip(f"{exc.kind.value}: {exc.detail}"),
            )
            ctx.emit(CUSTOMER_NOTIFICATIONS, refund_notification(order.order, lines))
            case.attempts.append(Attempt(action, True, f"refund of {describe_lines(lines)}"))
            case.resolve(f"refunded {describe_lines(lines)}")
        else:  # pragma: no cover - PIPELINE_ACTIONS are handled by the caller
            raise ValueError(f"{action.value} is not a local action")

    async def advance(ctx: HandlerContext, case: _Case, order: _Order) -> None:
        """Try the playbook's actions from where the case stands until one starts, resolves or queues it."""
        exc = case.exception
        wo_lines = await _work_order_lines(ctx.db, exc)
        lines = affected_lines(exc, wo_lines)
        while True:
            action = next_action(exc, [(a.action, a.succeeded) for a in case.attempts], book)
            if action == EXHAUSTED:
                await to_review(ctx, case, order, exhausted_reason(exc.kind, case.attempts))
                return
            try:
                if action in PIPELINE_ACTIONS:
                    request = build_redecide(
                        exc, action, order.order, order.sequence, book.limits, work_order_lines=wo_lines
                    )
                    ctx.emit(REROUTES, request)
                    case.current_action = action
                    ctx.log.info("repair requested", exception_id=exc.exception_id, action=action.value)
                else:
                    await run_local(ctx, case, order, action, lines)
                return
            except NotApplicable as why:
                case.attempts.append(Attempt(action, False, str(why)))

    async def settle(ctx: HandlerContext, case: _Case, order: _Order | None) -> None:
        """Continue the case, unless its order is gone or cancelled."""
        if order is None:
            await to_review(
                ctx,
                case,
                None,
                f"{case.exception.kind.value}: order {case.exception.order_id} is unknown to ingest; "
                f"{case.exception.detail}",
            )
        elif order.cancelled:
            case.resolve("the order was cancelled; nothing to repair")
        else:
            await advance(ctx, case, order)

    async def on_exception(ctx: HandlerContext, exc: ExceptionRaised) -> None:
        opened = await ctx.db.fetchval(
            "INSERT INTO exceptions_cases (exception_id, order_id, kind, payload, state, opened_at)"
            " VALUES ($1, $2, $3, $4, 'open', $5) ON CONFLICT (exception_id) DO NOTHING RETURNING true",
            exc.exception_id,
            exc.order_id,
            exc.kind.value,
            exc.model_dump_json(),
            ctx.now,
        )
        if not opened:
            ctx.log.info("exception already has a case", exception_id=exc.exception_id)
            return
        case = _Case(exc)
        await settle(ctx, case, await _load_order(ctx.db, exc.order_id))
        await _save(ctx.db, case, ctx.now)
        ending = None if case.state == "open" else case.ending()
        cases.count_case(ctx, exc.kind.value, opened=True, ending=ending)

    async def on_outcome(ctx: HandlerContext, outcome: RepairOutcome) -> None:
        row = await ctx.db.fetchrow(
            "SELECT payload, state, actions_tried, current_action FROM exceptions_cases"
            " WHERE exception_id = $1 FOR UPDATE",
            outcome.exception_id,
        )
        if row is None or row["state"] != "open" or row["current_action"] != outcome.action:
            ctx.log.info(
                "stale repair outcome ignored", exception_id=outcome.exception_id, action=outcome.action
            )
            return
        case = _Case(
            ExceptionRaised.model_validate_json(row["payload"]),
            [Attempt.from_json(a) for a in orjson.loads(row["actions_tried"])],
        )
        action = PlaybookAction(outcome.action)
        case.attempts.append(
            Attempt(action, outcome.succeeded, outcome.detail, outcome.promised_delivery_date)
        )
        order = await _load_order(ctx.db, outcome.order_id)
        if outcome.succeeded:
            case.resolve(f"{action.value} succeeded: {outcome.detail}")
            promised = outcome.promised_delivery_date
            if order is not None and promised is not None and promised > order.order.promised_delivery_date:
                ctx.emit(CUSTOMER_NOTIFICATIONS, new_date_notification(order.order, promised))
        else:
            await settle(ctx, case, order)
        await _save(ctx.db, case, ctx.now)
        if case.state != "open":
            cases.count_case(ctx, case.exception.kind.value, opened=False, ending=case.ending())

    async def handle(event: Envelope, ctx: HandlerContext) -> None:
        data = event.data
        if isinstance(data, ExceptionRaised):
            await on_exception(ctx, data)
        elif isinstance(data, RepairOutcome):
            await on_outcome(ctx, data)
        else:  # pragma: no cover - `accepts` lets nothing else through
            raise RejectEvent(f"exceptions does not handle {event.type}")

    return Stage(
        name="exceptions",
        inputs=(EXCEPTIONS,),
        outputs=(REROUTES, STATUS, CUSTOMER_NOTIFICATIONS),
        handler=handle,
        uses_database=True,
        accepts=frozenset({ExceptionRaised.event_type, RepairOutcome.event_type}),
        views=(cases,),
        description="applies the exception playbooks: repairs, back-orders, customer messages, review",
    )


__all__ = ["UnresolvedCases", "exceptions_stage", "review_queue"]
