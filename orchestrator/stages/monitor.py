"""monitor: watches released work until it is delivered, and says when it goes off plan.

Reads work orders as release sent them (`orchestrator.released.v1`), what
nodes and carriers report (`wms.events.v1`, `carrier.events.v1`), node
closures (`network.updates.v1`, in its own group) and its own timers
(`orchestrator.timers.v1`). Decides:
- where each work order stands: milestones only move forward, so repeated,
  late and out-of-order events change nothing twice;
- the order's shipping state (partially shipped, shipped, delivered), reported
  to status-sync when it changes;
- which events and missed deadlines are exceptions for the playbooks (short
  pick, refusal, node cancellation or closure, not acknowledged, not shipped
  by the cut-off, no carrier scan, promise at risk, carrier exception, lost
  parcel), each with a deterministic id and raised once.

Deadlines live in the table, so they survive restarts: a ticker in every
process scans for those that fell due and publishes `monitor.timer_due`
events, and the handler checks them again inside its transaction (the node
may have acknowledged in between) before raising anything.

Owns `monitor_shipments`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import asyncpg
import orjson
import structlog
from aiokafka import AIOKafkaProducer

from orchestrator.contract.common import OrderState, SkuLine
from orchestrator.contract.envelope import Envelope, encode
from orchestrator.contract.execution import (
    ShipmentDelayed,
    ShipmentDelivered,
    ShipmentException,
    ShipmentInTransit,
    ShipmentLost,
    ShipmentPickedUp,
    WorkOrderAcknowledged,
    WorkOrderCancelledByNode,
    WorkOrderPacked,
    WorkOrderPicked,
    WorkOrderRejected,
    WorkOrderShipped,
    WorkOrderShortPicked,
)
from orchestrator.contract.network import (
    CarrierOutage,
    CarrierServiceUpserted,
    NodeCapacityChanged,
    NodeStatusChanged,
    NodeUpserted,
)
from orchestrator.contract.pipeline import TimerDue
from orchestrator.contract.status import ExceptionKind, ExceptionRaised
from orchestrator.contract.work import WorkOrderCancelRequested, WorkOrderReleased
from orchestrator.domain.monitoring import (
    OPEN_STATES,
    TIMER_EXCEPTION,
    WITH_CARRIER,
    Deadlines,
    ShipmentState,
    Timer,
    advance,
    compact_time,
    counts_for_order,
    due_timers,
    exception_id,
    is_due,
    milestone_of,
    node_stopped,
    order_transition,
    promise_at_risk,
    short_pick_detail,
    short_unfilled,
    timer_event_id,
)
from orchestrator.domain.playbooks import load_playbooks
from orchestrator.runtime.pause import sleep_unless
from orchestrator.runtime.stage import HandlerContext, RejectEvent, RetryLater, Stage
from orchestrator.settings import Settings
from orchestrator.stages.common import NETWORK_UPDATES, RELEASED, STATUS, OrderPathDeps, emit_status
from orchestrator.stages.learning_store import learn_from_carrier_event, learn_from_node_event

WMS_EVENTS = "wms.events.v1"
CARRIER_EVENTS = "carrier.events.v1"
EXCEPTIONS = "orchestrator.exceptions.v1"
TIMERS = "orchestrator.timers.v1"

ACK_TIMEOUT_ENV = "ORCHESTRATOR_ACK_TIMEOUT_S"
EARLY_EVENT_WAIT_ENV = "ORCHESTRATOR_EARLY_EVENT_WAIT_S"
SCAN_TIMEOUT_ENV = "ORCHESTRATOR_SCAN_TIMEOUT_S"

#: Status reports name the ingest sequence they belong to, which monitor never sees; status-sync orders
#: monitor's reports by arrival, so any positive number does.
_STATUS_SEQUENCE = 1
_SOURCE = "orchestrator/monitor"
_NODE_EVENTS = (
    WorkOrderAcknowledged,
    WorkOrderPicked,
    WorkOrderShortPicked,
    WorkOrderPacked,
    WorkOrderShipped,
    WorkOrderRejected,
    WorkOrderCancelledByNode,
)
_CARRIER_EVENTS = (
    ShipmentPickedUp,
    ShipmentInTransit,
    ShipmentDelayed,
    ShipmentException,
    ShipmentDelivered,
    ShipmentLost,
)
_NETWORK_EVENTS = (
    NodeUpserted,
    NodeStatusChanged,
    NodeCapacityChanged,
    CarrierServiceUpserted,
    CarrierOutage,
)


def _seconds(env: Mapping[str, str], name: str) -> timedelta | None:
    raw = env.get(name)
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from exc
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {raw!r}")
    return timedelta(seconds=value)


@dataclass(frozen=True)
class MonitorTimers:
    """How long a node has to acknowledge, how long a carrier may go without a scan, how often to look."""

    acknowledge_within: timedelta = timedelta(minutes=30)
    carrier_scan_within: timedelta = timedelta(hours=24)
    tick_s: float = 1.0
    #: How long an event about work monitor has not seen released yet may wait for the release.
    early_event_wait_s: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MonitorTimers:
        """The playbook timers; the ORCHESTRATOR_{ACK,SCAN}_TIMEOUT_S and _EARLY_EVENT_WAIT_S env override."""
        e = os.environ if env is None else env
        playbooks = load_playbooks()
        wait = _seconds(e, EARLY_EVENT_WAIT_ENV)
        return cls(
            acknowledge_within=_seconds(e, ACK_TIMEOUT_ENV) or playbooks.timers.acknowledge_within,
            carrier_scan_within=_seconds(e, SCAN_TIMEOUT_ENV) or playbooks.timers.carrier_scan_within,
            early_event_wait_s=wait.total_seconds() if wait else cls.early_event_wait_s,
        )


# ------------------------------------------------------------------------ rows

_COLUMNS = (
    "work_order_id, order_id, shipment_id, node_id, state, lines, promised_delivery_date, ack_due_at,"
    " ship_due_at, scan_due_at, tracking_number, last_event_at, fired, raised, correlation_id"
)


@dataclass
class Shipment:
    """One row of `monitor_shipments` while a handler works on it (under its row lock)."""

    work_order_id: str
    order_id: str
    shipment_id: str
    node_id: str
    state: ShipmentState
    lines: tuple[SkuLine, ...]
    promised_delivery_date: date
    ack_due_at: datetime
    ship_due_at: datetime
    scan_due_at: datetime | None
    tracking_number: str | None
    last_event_at: datetime | None
    fired: list[str]
    raised: list[str]
    correlation_id: str
    #: The state when the handler loaded it: the order's "before" when its shipping state is reported.
    loaded_state: ShipmentState = ShipmentState.RELEASED
    dirty: bool = False

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> Shipment:
        state = ShipmentState(r["state"])
        return cls(
            work_order_id=r["work_order_id"],
            order_id=r["order_id"],
            shipment_id=r["shipment_id"],
            node_id=r["node_id"],
            state=state,
            lines=tuple(SkuLine.model_validate(x) for x in orjson.loads(r["lines"])),
            promised_delivery_date=r["promised_delivery_date"],
            ack_due_at=r["ack_due_at"],
            ship_due_at=r["ship_due_at"],
            scan_due_at=r["scan_due_at"],
            tracking_number=r["tracking_number"],
            last_event_at=r["last_event_at"],
            fired=list(r["fired"]),
            raised=list(r["raised"]),
            correlation_id=r["correlation_id"],
            loaded_state=state,
        )

    def deadlines(self) -> Deadlines:
        return Deadlines(
            state=self.state,
            acknowledge=self.ack_due_at,
            ship_by=self.ship_due_at,
            carrier_scan=self.scan_due_at,
            fired=frozenset(self.fired),
        )

    def move(self, target: ShipmentState) -> bool:
        """Move to `target` if that is forward (see `advance`); False when the event changes nothing."""
        new = advance(self.state, target)
        if new is None:
            return False
        self.state = new
        self.dirty = True
        return True

    def seen(self, at: datetime) -> None:
        if self.last_event_at is None or at > self.last_event_at:
            self.last_event_at = at
            self.dirty = True

    def expect_scan(self, by: datetime) -> None:
        """The carrier owes its next scan by `by`; a new deadline, so its timer may fire again."""
        self.scan_due_at = by
        if "carrier_scan" in self.fired:
            self.fired.remove("carrier_scan")
        self.dirty = True


async def _lock_order(conn: asyncpg.Connection, order_id: str) -> list[Shipment]:
    # Every handler takes all of the order's rows, in one order, so the order's shipping state is
    # computed from states nobody else is changing (wms and carrier events arrive on other partitions).
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM monitor_shipments WHERE order_id = $1 ORDER BY work_order_id FOR UPDATE",
        order_id,
    )
    return [Shipment.from_record(r) for r in rows]


async def _save(conn: asyncpg.Connection, shipments: Sequence[Shipment]) -> None:
    for s in shipments:
        if not s.dirty:
            continue
        await conn.execute(
            "UPDATE monitor_shipments SET state = $2, scan_due_at = $3, tracking_number = $4,"
            " last_event_at = $5, fired = $6, raised = $7, updated_at = now() WHERE work_order_id = $1",
            s.work_order_id,
            s.state.value,
            s.scan_due_at,
            s.tracking_number,
            s.last_event_at,
            s.fired,
            s.raised,
        )
        s.dirty = False


def _raise(
    ctx: HandlerContext,
    s: Shipment,
    kind: ExceptionKind,
    detail: str,
    *,
    suffix: str | None = None,
    unfilled: tuple[SkuLine, ...] = (),
    new_estimate: date | None = None,
) -> None:
    """Emit the exception unless this work order raised the same one before (repeats are one)."""
    eid = exception_id(s.work_order_id, kind, suffix)
    if eid in s.raised:
        ctx.log.info("exception already raised", exception_id=eid)
        return
    s.raised.append(eid)
    s.dirty = True
    ctx.emit(
        EXCEPTIONS,
        ExceptionRaised(
            exception_id=eid,
            order_id=s.order_id,
            kind=kind,
            node_id=s.node_id,
            work_order_id=s.work_order_id,
            shipment_id=s.shipment_id,
            line_ids=tuple(line.line_id for line in unfilled),
            detail=detail[:2000],
            raised_at=ctx.now,
            unfilled=unfilled,
            new_estimate=new_estimate,
        ),
    )


def _report_order(
    ctx: HandlerContext,
    order_id: str,
    shipments: Sequence[Shipment],
    before: Sequence[ShipmentState] | None = None,
) -> None:
    """Tell status-sync when the order's shipping state changed with this event.

    `before` defaults to the states the handler loaded; a handler that added a
    work order passes the states without it.
    """
    if before is None:
        before = [s.loaded_state for s in shipments]
    state = order_transition(before, [s.state for s in shipments])
    if state is None:
        return
    counted = [s for s in shipments if counts_for_order(s.state)]
    if state is OrderState.DELIVERED:
        detail = f"all {len(counted)} shipment(s) delivered"
    else:
        shipped = sum(1 for s in counted if s.state not in OPEN_STATES)
        detail = f"{shipped} of {len(counted)} shipment(s) shipped"
    emit_status(ctx, order_id, state, _STATUS_SEQUENCE, detail=detail)
    for s in shipments:
        s.loaded_state = s.state  # reported: a second report in the same handler starts from here


def _unknown_work_order(work_order_id: str, order_id: str, wait_s: float) -> RetryLater:
    # The release travels on another topic and may simply not have been handled yet: wait a little.
    return RetryLater(
        f"unknown work order {work_order_id} of order {order_id}: monitor never saw it released",
        "unknown_work_order",
        give_up_after_s=wait_s,
    )


def _find(shipments: Sequence[Shipment], work_order_id: str) -> Shipment | None:
    return next((s for s in shipments if s.work_order_id == work_order_id), None)


# ----------------------------------------------------------------------- stage


def monitor_stage(deps: OrderPathDeps, timers: MonitorTimers | None = None) -> Stage:
    """The monitor stage; `timers` default to MonitorTimers.from_env()."""
    # monitor needs no network view (closures come to it as events of its own group); of the policy,
    # only what learning from execution needs.
    learning = deps.policy.learning
    cfg = timers or MonitorTimers.from_env()
    ticker = TimerTicker(cfg)

    async def on_released(ctx: HandlerContext, wo: WorkOrderReleased) -> None:
        shipments = await _lock_order(ctx.db, wo.order_id)
        if _find(shipments, wo.work_order_id) is not None:
            ctx.log.info("work order already known; nothing changes", work_order_id=wo.work_order_id)
            return
        # Counted from when monitor learns of the work, not from the release's own time: after a backlog,
        # the node's answer may still be queued on another topic, and a false alarm starts a repair.
        released_at = ctx.now
        lines = tuple(SkuLine(line_id=x.line_id, sku=x.sku, quantity=x.quantity) for x in wo.lines)
        inserted = await ctx.db.execute(
            "INSERT INTO monitor_shipments (work_order_id, order_id, shipment_id, node_id, state, lines,"
            " promised_delivery_date, ack_due_at, ship_due_at, correlation_id)"
            " VALUES ($1, $2, $3, $4, 'released', $5, $6, $7, $8, $9)"
            " ON CONFLICT (work_order_id) DO NOTHING",
            wo.work_order_id,
            wo.order_id,
            wo.shipment_id,
            wo.node_id,
            orjson.dumps([x.model_dump(mode="json") for x in lines]).decode(),
            wo.promised_delivery_date,
            released_at + cfg.acknowledge_within,
            wo.ship_by,
            ctx.event.correlation_id,
        )
        if inserted == "INSERT 0 0":
            return  # inserted by a concurrent handler since the lock (a guard: one order, one partition)
        new = Shipment(
            work_order_id=wo.work_order_id,
            order_id=wo.order_id,
            shipment_id=wo.shipment_id,
            node_id=wo.node_id,
            state=ShipmentState.RELEASED,
            lines=lines,
            promised_delivery_date=wo.promised_delivery_date,
            ack_due_at=released_at + cfg.acknowledge_within,
            ship_due_at=wo.ship_by,
            scan_due_at=None,
            tracking_number=None,
            last_event_at=None,
            fired=[],
            raised=[],
            correlation_id=ctx.event.correlation_id,
        )
        # A new work order of an order that had shipped (a repair of a short pick) makes it partial again;
        # the row did not exist before, so it does not count in the "before" state.
        _report_order(ctx, wo.order_id, [*shipments, new], before=[s.state for s in shipments])

    async def on_cancel_requested(ctx: HandlerContext, msg: WorkOrderCancelRequested) -> None:
        shipments = await _lock_order(ctx.db, msg.order_id)
        s = _find(shipments, msg.work_order_id)
        if s is None:
            raise _unknown_work_order(msg.work_order_id, msg.order_id, cfg.early_event_wait_s)
        if s.move(ShipmentState.CANCEL_REQUESTED):
            _report_order(ctx, msg.order_id, shipments)
        await _save(ctx.db, shipments)

    async def on_node_event(
        ctx: HandlerContext,
        ev: WorkOrderAcknowledged
        | WorkOrderPicked
        | WorkOrderShortPicked
        | WorkOrderPacked
        | WorkOrderShipped
        | WorkOrderRejected
        | WorkOrderCancelledByNode,
    ) -> None:
        shipments = await _lock_order(ctx.db, ev.order_id)
        s = _find(shipments, ev.work_order_id)
        if s is None:
            raise _unknown_work_order(ev.work_order_id, ev.order_id, cfg.early_event_wait_s)
        if ev.node_id != s.node_id:
            raise RejectEvent(
                f"work order {ev.work_order_id} was released to node {s.node_id}, not {ev.node_id}",
                "wrong_node",
            )
        s.seen(ev.occurred_at)
        # Learning counts each step of a work order once: a repeated or overtaken event teaches nothing.
        fresh = False
        if isinstance(ev, (WorkOrderRejected, WorkOrderCancelledByNode)):
            stop = node_stopped(s.state, ev)
            fresh = stop is not None
            if stop is not None:
                s.state = stop.state
                s.dirty = True
                if stop.kind is not None:
                    verb = "rejected" if stop.kind is ExceptionKind.NODE_REJECTED else "cancelled"
                    detail = f"node {s.node_id} {verb} work order {s.work_order_id} ({ev.reason.value})"
                    _raise(
                        ctx,
                        s,
                        stop.kind,
                        detail + (f": {ev.detail}" if ev.detail else ""),
                        unfilled=s.lines,
                    )
        else:
            target = milestone_of(ev)
            assert target is not None
            moved = s.move(target)
            fresh = moved
            if isinstance(ev, WorkOrderShortPicked) and counts_for_order(s.state):
                _raise(
                    ctx,
                    s,
                    ExceptionKind.SHORT_PICK,
                    short_pick_detail(s.node_id, ev.lines),
                    unfilled=short_unfilled(ev.lines),
                )
            if isinstance(ev, WorkOrderShipped):
                if s.tracking_number is None:
                    s.tracking_number = ev.tracking_number
                    s.dirty = True
                if moved and s.state is ShipmentState.SHIPPED:
                    s.expect_scan(ctx.now + cfg.carrier_scan_within)
        if fresh:
            await learn_from_node_event(
                ctx.db,
                ctx.log,
                ev,
                node_id=s.node_id,
                work_order_id=s.work_order_id,
                ship_due_at=s.ship_due_at,
                promised=s.promised_delivery_date,
                now=ctx.now,
                policy=learning,
            )
        _report_order(ctx, ev.order_id, shipments)
        await _save(ctx.db, shipments)

    async def on_carrier_event(
        ctx: HandlerContext,
        ev: ShipmentPickedUp
        | ShipmentInTransit
        | ShipmentDelayed
        | ShipmentException
        | ShipmentDelivered
        | ShipmentLost,
    ) -> None:
        shipments = await _lock_order(ctx.db, ev.order_id)
        # The tracking number names the shipment; its planned id finds it too when the carrier's first
        # scan overtakes the node's `shipped` event (they come on different topics).
        s = next((x for x in shipments if x.tracking_number == ev.tracking_number), None) or next(
            (x for x in shipments if x.shipment_id == ev.shipment_id), None
        )
        if s is None:
            raise RetryLater(
                f"unknown shipment: order {ev.order_id} has no work order with tracking number "
                f"{ev.tracking_number} or shipment {ev.shipment_id}",
                "unknown_shipment",
                give_up_after_s=cfg.early_event_wait_s,
            )
        s.seen(ev.occurred_at)
        if s.tracking_number is None:
            s.tracking_number = ev.tracking_number
            s.dirty = True
        carrier = f"carrier {ev.carrier}"
        if isinstance(ev, (ShipmentPickedUp, ShipmentInTransit)):
            s.move(ShipmentState.IN_TRANSIT)
            if s.state in WITH_CARRIER:
                s.expect_scan(ctx.now + cfg.carrier_scan_within)
        elif isinstance(ev, ShipmentDelayed):
            if counts_for_order(s.state) and promise_at_risk(
                s.promised_delivery_date, ev.new_estimated_delivery
            ):
                _raise(
                    ctx,
                    s,
                    # The parcel is with the carrier: nothing to re-book, only a new date to tell.
                    ExceptionKind.CARRIER_DELAY,
                    f"{carrier} now expects {ev.tracking_number} on {ev.new_estimated_delivery}, "
                    f"after the promised {s.promised_delivery_date}"
                    + (f" ({ev.reason})" if ev.reason else ""),
                    suffix=ev.new_estimated_delivery.isoformat(),
                    new_estimate=ev.new_estimated_delivery,
                )
        elif isinstance(ev, ShipmentException):
            _raise(
                ctx,
                s,
                ExceptionKind.CARRIER_EXCEPTION,
                f"{carrier} reported {ev.code} on {ev.tracking_number}: {ev.description}",
                suffix=f"{ev.code}:{compact_time(ev.occurred_at)}",
            )
        elif isinstance(ev, ShipmentDelivered):
            fresh = s.move(ShipmentState.DELIVERED)
        else:
            fresh = s.move(ShipmentState.LOST)
            if fresh:
                _raise(
                    ctx,
                    s,
                    ExceptionKind.LOST_PARCEL,
                    f"{carrier} declared {ev.tracking_number} (shipment {s.shipment_id}) lost",
                    unfilled=s.lines,
                )
        if isinstance(ev, (ShipmentDelivered, ShipmentLost)) and fresh:
            await learn_from_carrier_event(
                ctx.db, ctx.log, ev, work_order_id=s.work_order_id, now=ctx.now, policy=learning
            )
        _report_order(ctx, ev.order_id, shipments)
        await _save(ctx.db, shipments)

    async def on_node_closed(ctx: HandlerContext, ev: NodeStatusChanged) -> None:
        rows = await ctx.db.fetch(
            f"SELECT {_COLUMNS} FROM monitor_shipments WHERE node_id = $1 AND state = ANY($2::text[])"
            " ORDER BY order_id, work_order_id FOR UPDATE",
            ev.node_id,
            sorted(s.value for s in OPEN_STATES),
        )
        stranded = [Shipment.from_record(r) for r in rows]
        for s in stranded:
            _raise(
                ctx,
                s,
                ExceptionKind.NODE_CLOSED,
                f"node {s.node_id} closed ({ev.reason}) with work order {s.work_order_id} {s.state.value}",
                # One closure is one exception, however often it is re-published; a later closure is new.
                suffix=compact_time(ev.changed_at),
                unfilled=s.lines,
            )
        await _save(ctx.db, stranded)

    async def on_timer(ctx: HandlerContext, msg: TimerDue) -> None:
        shipments = await _lock_order(ctx.db, msg.order_id)
        s = _find(shipments, msg.work_order_id)
        if s is None:
            raise _unknown_work_order(msg.work_order_id, msg.order_id, cfg.early_event_wait_s)
        timer: Timer = msg.timer
        deadlines = s.deadlines()
        # Due by this clock, or by the ticker's (it saw this very deadline pass); a deadline moved
        # since (a scan came) is not due.
        if not is_due(deadlines, timer, max(ctx.now, msg.due_at)):
            ctx.log.info("timer no longer due", work_order_id=s.work_order_id, timer=timer, state=s.state)
            return
        due = deadlines.due_at(timer)
        assert due is not None
        s.fired.append(timer)
        s.dirty = True
        when = f"{due.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
        kind = TIMER_EXCEPTION[timer]
        if timer == "acknowledge":
            _raise(
                ctx,
                s,
                kind,
                f"node {s.node_id} did not acknowledge work order {s.work_order_id} by {when}",
                unfilled=s.lines,
            )
        elif timer == "ship_by":
            _raise(
                ctx,
                s,
                kind,
                f"work order {s.work_order_id} at node {s.node_id} is {s.state.value}, "
                f"not shipped by its cut-off {when}",
            )
        else:
            _raise(
                ctx,
                s,
                kind,
                f"no carrier scan of {s.tracking_number or s.shipment_id} since "
                f"{s.last_event_at or 'it shipped'}; the next was due by {when}",
                suffix=compact_time(due),
            )
        await _save(ctx.db, shipments)

    async def handle(event: Envelope, ctx: HandlerContext) -> None:
        data = event.data
        if isinstance(data, WorkOrderReleased):
            await on_released(ctx, data)
        elif isinstance(data, WorkOrderCancelRequested):
            await on_cancel_requested(ctx, data)
        elif isinstance(data, _NODE_EVENTS):
            await on_node_event(ctx, data)
        elif isinstance(data, _CARRIER_EVENTS):
            await on_carrier_event(ctx, data)
        elif isinstance(data, NodeStatusChanged):
            if not data.open:
                await on_node_closed(ctx, data)
        elif isinstance(data, TimerDue):
            await on_timer(ctx, data)
        elif isinstance(data, _NETWORK_EVENTS):
            pass  # capacity, master data and carrier outages change no released work
        else:  # pragma: no cover - `accepts` lets nothing else through
            raise RejectEvent(f"monitor does not handle {event.type}")

    return Stage(
        name="monitor",
        inputs=(RELEASED, WMS_EVENTS, CARRIER_EVENTS, NETWORK_UPDATES, TIMERS),
        outputs=(EXCEPTIONS, STATUS),
        handler=handle,
        uses_database=True,
        accepts=frozenset(
            m.event_type
            for m in (
                WorkOrderReleased,
                WorkOrderCancelRequested,
                TimerDue,
                *_NODE_EVENTS,
                *_CARRIER_EVENTS,
                *_NETWORK_EVENTS,
            )
        ),
        views=(ticker,),
        description="watches released work and raises exceptions when it goes off plan",
    )


# ---------------------------------------------------------------------- ticker

_DUE_SQL = f"""
SELECT {_COLUMNS} FROM monitor_shipments
 WHERE state = 'released' AND ack_due_at <= $1 AND NOT ('acknowledge' = ANY(fired))
UNION
SELECT {_COLUMNS} FROM monitor_shipments
 WHERE state IN ('released', 'acknowledged', 'picked', 'packed') AND ship_due_at <= $1
   AND NOT ('ship_by' = ANY(fired))
UNION
SELECT {_COLUMNS} FROM monitor_shipments
 WHERE state IN ('shipped', 'in_transit') AND scan_due_at <= $1 AND NOT ('carrier_scan' = ANY(fired))
LIMIT $2
"""


class TimerTicker:
    """Publishes a `monitor.timer_due` event for every deadline that fell due (a View, for its life cycle).

    It only asks; the stage's handler decides, in its transaction. Every
    instance runs one, and every tick and instance sends the same event id
    for the same deadline, so the runtime's idempotency record makes repeats
    (and re-sends after a restart) harmless. It remembers what it sent a
    little while, only to avoid sending it again on every tick.
    """

    def __init__(self, timers: MonitorTimers, *, resend_after_s: float = 60.0, batch: int = 5000) -> None:
        self.name = "monitor-timers"
        self.topic = TIMERS
        self.timers = timers
        #: After this long a deadline still due (its event not yet handled) is sent again.
        self.resend_after_s = resend_after_s
        #: Rows read per tick.
        self.batch = batch
        self.log = structlog.get_logger("orchestrator.monitor.ticker")
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None
        self._producer: AIOKafkaProducer | None = None
        self._sent: dict[str, float] = {}
        self._ready = False

    @property
    def ready(self) -> bool:
        return self._ready

    async def start(self, settings: Settings, stop: asyncio.Event) -> None:
        if self._task is not None:
            return  # shared by several stages of one process: started once
        self._task = asyncio.create_task(self._run(settings, stop), name="monitor:ticker")
        self._ready = True

    async def _run(self, settings: Settings, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                sent = await self.tick(settings)
                if sent:
                    self.log.info("timers due", sent=sent)
            except Exception as exc:  # a database or broker away is no reason to stop ticking
                self.log.warning("timer scan failed; retrying", error=repr(exc))
                await self._disconnect()
            await sleep_unless(stop, self.timers.tick_s)

    async def tick(self, settings: Settings, now: datetime | None = None) -> int:
        """One scan: publish what fell due and was not sent lately; returns how many were sent."""
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(settings.database_url, command_timeout=30)
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=settings.kafka_bootstrap,
                client_id=f"orchestrator.monitor.ticker.{settings.instance_id}",
                enable_idempotence=True,
                acks="all",
                linger_ms=5,
            )
            await producer.start()
            self._producer = producer
        now = now or datetime.now(UTC)
        clock = time.monotonic()
        for stale in [k for k, at in self._sent.items() if clock - at > self.resend_after_s]:
            del self._sent[stale]
        rows = await self._conn.fetch(_DUE_SQL, now, self.batch)
        envelopes: list[Envelope] = []
        for r in rows:
            s = Shipment.from_record(r)
            for timer, due in due_timers(s.deadlines(), now):
                eid = timer_event_id(s.work_order_id, timer, due)
                if eid in self._sent:
                    continue
                env = Envelope.new(
                    TimerDue(order_id=s.order_id, work_order_id=s.work_order_id, timer=timer, due_at=due),
                    source=_SOURCE,
                    event_id=eid,
                    time=now,
                )
                # The timer's exception belongs to the order's story like every other event of it.
                envelopes.append(dataclasses.replace(env, correlation_id=s.correlation_id))
        if not envelopes:
            return 0
        futures = []
        for env in envelopes:
            key, value, headers = encode(env)
            futures.append(await self._producer.send(TIMERS, key=key, value=value, headers=headers))
        await asyncio.gather(*futures)
        for env in envelopes:
            self._sent[env.id] = clock
        return len(envelopes)

    async def _disconnect(self) -> None:
        conn, producer = self._conn, self._producer
        self._conn = self._producer = None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        self._task = None
        self._ready = False
        await self._disconnect()
