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

An event about work monitor has not seen released yet (the release comes on
another topic, and after a burst or a restart may come later) is parked: kept
as it arrived, with its offset committed, so the partition goes on. The
release's handler replays the order's parked events, in arrival order, in its
own transaction; the ticker asks for those still waiting after the park limit
to be dead-lettered.

Owns `monitor_shipments` and `monitor_parked_events`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import asyncpg
import orjson
import structlog

from orchestrator.contract.common import OrderState, SkuLine
from orchestrator.contract.envelope import Envelope
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
from orchestrator.contract.pipeline import ParkedEventExpired, TimerDue
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
    order_transitions,
    promise_at_risk,
    short_pick_detail,
    short_unfilled,
    timer_event_id,
)
from orchestrator.domain.playbooks import load_playbooks
from orchestrator.runtime.parking import (
    RECORD_COLUMNS,
    ParkedRecord,
    ReplayContext,
    lock_parking,
    park,
    parked_gauge,
    replay,
    take_expired,
    waited,
)
from orchestrator.runtime.stage import HandlerContext, RejectEvent, Stage
from orchestrator.runtime.ticker import Ticker
from orchestrator.settings import env_seconds
from orchestrator.stages.common import (
    NETWORK_UPDATES,
    RELEASED,
    STATUS,
    WMS_EVENTS,
    OrderPathDeps,
    emit_status,
)
from orchestrator.stages.learning_store import learn_from_carrier_event, learn_from_node_event

CARRIER_EVENTS = "carrier.events.v1"
EXCEPTIONS = "orchestrator.exceptions.v1"
TIMERS = "orchestrator.timers.v1"

ACK_TIMEOUT_ENV = "ORCHESTRATOR_ACK_TIMEOUT_S"
SCAN_TIMEOUT_ENV = "ORCHESTRATOR_SCAN_TIMEOUT_S"
PARK_LIMIT_ENV = "ORCHESTRATOR_MONITOR_PARK_LIMIT_S"
#: monitor's setting before it parked events; returns still reads it. Not taken as the park limit: it
#: was sized to hold a partition for seconds, and a park limit that short drops events a restart delays.
EARLY_EVENT_WAIT_ENV = "ORCHESTRATOR_EARLY_EVENT_WAIT_S"

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
#: The events about one order: monitor locks that order's rows to handle them.
_ORDER_EVENTS = (
    WorkOrderReleased,
    WorkOrderCancelRequested,
    TimerDue,
    ParkedEventExpired,
    *_NODE_EVENTS,
    *_CARRIER_EVENTS,
)
#: Work a node closure strands, as the text the state column holds.
_OPEN_STATE_VALUES = tuple(sorted(s.value for s in OPEN_STATES))


@dataclass(frozen=True)
class MonitorTimers:
    """How long a node has to acknowledge, how long a carrier may go without a scan, how often to look."""

    acknowledge_within: timedelta = timedelta(minutes=30)
    carrier_scan_within: timedelta = timedelta(hours=24)
    #: A collect-in-store order ready at the store has no carrier to scan it: the customer collects it.
    collection_within: timedelta = timedelta(days=7)
    tick_s: float = 1.0
    #: How long an event about work monitor has not seen released yet stays parked waiting for the
    #: release before it is dead-lettered. Long: a parked event holds nothing up.
    park_limit: timedelta = timedelta(hours=1)

    def after_shipped(self, pickup: bool) -> timedelta:
        """How long after a work order ships the next word may take: a carrier's first scan, or for
        a collect-in-store order (ready at the store, no carrier) the customer collecting it."""
        return self.collection_within if pickup else self.carrier_scan_within

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MonitorTimers:
        """The playbook timers; ORCHESTRATOR_{ACK,SCAN}_TIMEOUT_S and ORCHESTRATOR_MONITOR_PARK_LIMIT_S
        override."""
        e = os.environ if env is None else env
        playbooks = load_playbooks()
        if e.get(EARLY_EVENT_WAIT_ENV) and not e.get(PARK_LIMIT_ENV):
            structlog.get_logger("orchestrator.monitor").warning(
                f"{EARLY_EVENT_WAIT_ENV} no longer applies to monitor, which parks early events instead of"
                f" waiting; its park limit is {PARK_LIMIT_ENV} (default 1 h). returns still reads it."
            )
        return cls(
            acknowledge_within=env_seconds(e, ACK_TIMEOUT_ENV) or playbooks.timers.acknowledge_within,
            carrier_scan_within=env_seconds(e, SCAN_TIMEOUT_ENV) or playbooks.timers.carrier_scan_within,
            collection_within=playbooks.timers.collection_within,
            park_limit=env_seconds(e, PARK_LIMIT_ENV) or cls.park_limit,
        )


# ------------------------------------------------------------------------ rows

_COLUMNS = (
    "work_order_id, order_id, shipment_id, node_id, state, lines, promised_delivery_date, ack_due_at,"
    " ship_due_at, scan_due_at, tracking_number, last_event_at, fired, raised, correlation_id, pickup"
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
    #: Collect in store: no carrier; once ready, the customer collecting it is the next word.
    pickup: bool = False
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
            pickup=r["pickup"],
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


async def lock_batch_orders(events: Sequence[Envelope], conn: asyncpg.Connection) -> None:
    """Take every order's rows and parking lock that the batch's handlers will take, in one order.

    Handlers lock an order when they come to its event, so two batches (a node's events and a
    carrier's, on partitions of other topics, or two instances) that meet orders X and Y in opposite
    orders deadlock, and PostgreSQL rolls one back to be redone (up to 9 times in a run of
    `test_faults`). Locked up front by order id, and the parking locks after all rows (the order
    handlers keep), the batches wait on each other instead.
    """
    orders = sorted({e.data.order_id for e in events if isinstance(e.data, _ORDER_EVENTS)})
    closed = sorted(
        {e.data.node_id for e in events if isinstance(e.data, NodeStatusChanged) and not e.data.open}
    )
    if not orders and not closed:
        return
    await conn.execute(
        "SELECT 1 FROM monitor_shipments WHERE order_id = ANY($1::text[])"
        " OR (node_id = ANY($2::text[]) AND state = ANY($3::text[]))"
        " ORDER BY order_id, work_order_id FOR UPDATE",
        orders,
        closed,
        _OPEN_STATE_VALUES,
    )
    if orders:
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1, k) FROM"
            " (SELECT DISTINCT hashtext(o) AS k FROM unnest($2::text[]) AS o ORDER BY k) AS keys",
            _PARKING_LOCK_SPACE,
            orders,
        )


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
    counted = [s for s in shipments if counts_for_order(s.state)]
    for state in order_transitions(before, [s.state for s in shipments]):
        if state is OrderState.DELIVERED:
            detail = f"all {len(counted)} shipment(s) delivered"
        else:
            shipped = sum(1 for s in counted if s.state not in OPEN_STATES)
            detail = f"{shipped} of {len(counted)} shipment(s) shipped"
        emit_status(ctx, order_id, state, _STATUS_SEQUENCE, detail=detail)
    for s in shipments:
        s.loaded_state = s.state  # reported: a second report in the same handler starts from here


# -------------------------------------------------------------------- parking


class _NotReleasedYet(Exception):
    """The event is about work monitor has not seen released: it is parked, not handled (yet).

    Raised before the handler changes anything, so a handler can be tried again once it is known.
    """

    def __init__(self, order_id: str, awaited: str, *, work_order_id: str | None, shipment_id: str | None):
        super().__init__(f"{awaited} is not released yet")
        self.order_id = order_id
        #: What the event waits for, in words: "work order WO-1 of order O-1".
        self.awaited = awaited
        self.work_order_id = work_order_id
        self.shipment_id = shipment_id


def _unknown_work_order(work_order_id: str, order_id: str) -> _NotReleasedYet:
    return _NotReleasedYet(
        order_id,
        f"work order {work_order_id} of order {order_id}",
        work_order_id=work_order_id,
        shipment_id=None,
    )


#: Monitor's own space of two-key advisory locks (the one-key space, which reserve uses, is separate).
_PARKING_LOCK_SPACE = 0x4D4F4E  # "MON"


async def _lock_parking(conn: asyncpg.Connection, order_id: str) -> None:
    """Serialise parking an order's events with the releases that replay them, until commit. Where a
    handler takes both, it takes the order's rows first, so two handlers never wait on each other in
    a cycle over one order."""
    await lock_parking(conn, _PARKING_LOCK_SPACE, order_id)


_PARKED_COLUMNS = (
    f"event_id, order_id, work_order_id, shipment_id, event_type, awaited, {RECORD_COLUMNS}, parked_at"
)


async def _park(ctx: HandlerContext, early: _NotReleasedYet) -> None:
    waits_on = {
        "order_id": early.order_id,
        "work_order_id": early.work_order_id,
        "shipment_id": early.shipment_id,
        "awaited": early.awaited,
    }
    await park(ctx, "monitor_parked_events", "monitor", waits_on)
    ctx.log.info("parked until its work is released", awaited=early.awaited)


async def _unpark(conn: asyncpg.Connection, event_id: str) -> None:
    await conn.execute("DELETE FROM monitor_parked_events WHERE event_id = $1", event_id)


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
        # Held to commit: an event of this order parked concurrently on another partition is either
        # committed before this looks for parked events, or finds this work order when it looks again.
        await _lock_parking(ctx.db, wo.order_id)
        # Counted from when monitor learns of the work, not from the release's own time: after a backlog,
        # the node's answer may still be queued on another topic, and a false alarm starts a repair.
        released_at = ctx.now
        lines = tuple(SkuLine(line_id=x.line_id, sku=x.sku, quantity=x.quantity) for x in wo.lines)
        inserted = await ctx.db.execute(
            "INSERT INTO monitor_shipments (work_order_id, order_id, shipment_id, node_id, state, lines,"
            " promised_delivery_date, ack_due_at, ship_due_at, correlation_id, pickup)"
            " VALUES ($1, $2, $3, $4, 'released', $5, $6, $7, $8, $9, $10)"
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
            wo.carrier is None,
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
            pickup=wo.carrier is None,
        )
        # A new work order of an order that had shipped (a repair of a short pick) makes it partial again;
        # the row did not exist before, so it does not count in the "before" state.
        _report_order(ctx, wo.order_id, [*shipments, new], before=[s.state for s in shipments])
        await replay_parked(ctx, wo.order_id)

    async def on_cancel_requested(ctx: HandlerContext, msg: WorkOrderCancelRequested) -> None:
        shipments = await _lock_order(ctx.db, msg.order_id)
        s = _find(shipments, msg.work_order_id)
        if s is None:
            raise _unknown_work_order(msg.work_order_id, msg.order_id)
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
            raise _unknown_work_order(ev.work_order_id, ev.order_id)
        if ev.node_id != s.node_id:
            raise RejectEvent(
                f"work order {ev.work_order_id} was released to node {s.node_id}, not {ev.node_id}",
                "wrong_node",
            )
        s.seen(ev.occurred_at)
        # Learning counts each step of a work order once: a repeated or overtaken event teaches nothing.
        fresh = False
        learned_tracking = False
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
                    learned_tracking = True
                if moved and s.state is ShipmentState.SHIPPED:
                    s.expect_scan(ctx.now + cfg.after_shipped(s.pickup))
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
        # A carrier scan that named only this tracking number may be parked. No parking lock needed:
        # the order has rows, and a carrier event locks them before it looks, so the two serialise.
        # A replayed event leaves this to the replay's next pass.
        if learned_tracking and not isinstance(ctx, ReplayContext):
            await replay_parked(ctx, ev.order_id)

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
            raise _NotReleasedYet(
                ev.order_id,
                f"a work order of order {ev.order_id} with shipment {ev.shipment_id} "
                f"(tracking number {ev.tracking_number})",
                work_order_id=None,
                shipment_id=ev.shipment_id,
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
            _OPEN_STATE_VALUES,
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
            raise _unknown_work_order(msg.work_order_id, msg.order_id)
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
        elif s.pickup:
            _raise(
                ctx,
                s,
                kind,
                f"collect-in-store order ready at {s.node_id} since {s.last_event_at or 'it shipped'}"
                f" and not collected by {when}",
                suffix=compact_time(due),
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

    async def on_parked_expired(ctx: HandlerContext, msg: ParkedEventExpired) -> None:
        await _lock_parking(ctx.db, msg.order_id)
        row = await take_expired(
            ctx,
            "monitor_parked_events",
            _PARKED_COLUMNS,
            msg.parked_event_id,
            limit=cfg.park_limit,
            due_at=msg.due_at,
        )
        if row is not None:
            ctx.dead_letter(
                ParkedRecord.from_row(row),
                "never_released",
                f"{row['awaited']} was never released: the {row['event_type']} event waited "
                f"{waited(row['parked_at'], ctx.now)} for it (park limit {cfg.park_limit})",
            )

    async def replay_parked(ctx: HandlerContext, order_id: str) -> None:
        """Handle the order's parked events now that more of its work is known, in arrival order.

        Each is handled by the same code as when it arrived, as itself (its outputs are its own
        children), and deleted; one still about unknown work stays parked. Another pass follows one
        that settled something, since a replayed event can make a later-parked one match (a tracking
        number). A replayed event that fails is dead-lettered: it must not cost the release.
        """
        waiting = list(
            await ctx.db.fetch(
                f"SELECT {_PARKED_COLUMNS} FROM monitor_parked_events WHERE order_id = $1 ORDER BY arrival",
                order_id,
            )
        )
        while waiting:
            still = [row for row in waiting if not await replay_one(ctx, row)]
            if len(still) == len(waiting):
                return
            waiting = still

    async def replay_one(ctx: HandlerContext, row: asyncpg.Record) -> bool:
        """Replay one parked event; False when it is still about work not released."""
        return await replay(
            ctx, row, dispatch, still_waiting=_NotReleasedYet, unpark=lambda eid: _unpark(ctx.db, eid)
        )

    async def handle(event: Envelope, ctx: HandlerContext) -> None:
        try:
            await dispatch(event, ctx)
            return
        except _NotReleasedYet as early:
            order_id = early.order_id
        # The release may be committing on another partition right now: look again under the order's
        # parking lock. Either its work order is there now, or its handler will find this event parked.
        await _lock_parking(ctx.db, order_id)
        try:
            await dispatch(event, ctx)
        except _NotReleasedYet as early:
            await _park(ctx, early)

    async def dispatch(event: Envelope, ctx: HandlerContext) -> None:
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
        elif isinstance(data, ParkedEventExpired):
            await on_parked_expired(ctx, data)
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
        accepts=frozenset(m.event_type for m in (*_ORDER_EVENTS, *_NETWORK_EVENTS)),
        views=(ticker,),
        read_batch=lock_batch_orders,
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


_EXPIRED_PARKED_SQL = """
SELECT event_id, order_id, parked_at FROM monitor_parked_events
 WHERE parked_at <= $1 ORDER BY parked_at LIMIT $2
"""


class TimerTicker(Ticker):
    """Publishes a `monitor.timer_due` event for every deadline that fell due, and a
    `monitor.parked_expired` one for every parked event past the park limit (see `Ticker`)."""

    def __init__(self, timers: MonitorTimers, *, resend_after_s: float = 60.0, batch: int = 5000) -> None:
        super().__init__("monitor-timers", TIMERS, tick_s=timers.tick_s, resend_after_s=resend_after_s)
        self.timers = timers
        #: Rows read per tick.
        self.batch = batch

    async def scan(self, conn: asyncpg.Connection, now: datetime) -> list[Envelope]:
        envelopes: list[Envelope] = []
        for r in await conn.fetch(_DUE_SQL, now, self.batch):
            s = Shipment.from_record(r)
            for timer, due in due_timers(s.deadlines(), now):
                env = Envelope.new(
                    TimerDue(order_id=s.order_id, work_order_id=s.work_order_id, timer=timer, due_at=due),
                    source=_SOURCE,
                    event_id=timer_event_id(s.work_order_id, timer, due),
                    time=now,
                )
                # The timer's exception belongs to the order's story like every other event of it.
                envelopes.append(dataclasses.replace(env, correlation_id=s.correlation_id))
        return envelopes + await self._expired_parkings(conn, now)

    async def _expired_parkings(self, conn: asyncpg.Connection, now: datetime) -> list[Envelope]:
        """Requests to dead-letter the parked events that waited past the limit; updates the gauges."""
        if self._metrics is not None:
            parked, oldest_s = await parked_gauge(conn, "monitor_parked_events", now)
            self._metrics.monitor_parked_events.set(parked)
            self._metrics.monitor_parked_oldest_seconds.set(oldest_s)
        limit = self.timers.park_limit
        envelopes: list[Envelope] = []
        for r in await conn.fetch(_EXPIRED_PARKED_SQL, now - limit, self.batch):
            # One id per parked event: repeats from every tick and instance are one request.
            eid = f"parked-expired:{r['event_id']}"
            if eid in self._sent:
                continue
            expired = ParkedEventExpired(
                order_id=r["order_id"],
                parked_event_id=r["event_id"],
                parked_at=r["parked_at"],
                due_at=r["parked_at"] + limit,
            )
            envelopes.append(Envelope.new(expired, source=_SOURCE, event_id=eid, time=now))
        return envelopes
