"""decide-node: where each line is fulfilled, and why. Reads validated orders and re-decide requests.

Decides: the fulfilment plan (nodes, shipments, carrier services, promised
dates) by the optimisation in `orchestrator.domain.sourcing`, under the
routing policy; or a back-order, a hold for stock, or "cannot be fulfilled".
Every plan records its candidates and reasons, so `orchestrator explain` can
say why an order ships from where it does.

Owns `decide_plans` (every plan, for explain) and `decide_orders` (each
order's latest plan version). Reads the reserve stage's ledger and node load:
a view that may be a moment stale, which is fine because reserve is the
atomic check and a lost race comes back here as a re-decide.

The policy is the active one of `orchestrator policy` (the process's policy file
until one is deployed). While a shadow policy is deployed, every order's plan is
also made by the shadow on the same inputs and recorded beside the active one in
`decide_shadow_plans` (owned too, with `decide_policy_changes`); only the active
plan is emitted (`orchestrator.stages.policy_store`).

Counts, once a decision commits: every plan by outcome and origin, split plans, and stock-outs
(the lines a plan leaves waiting for stock; see `stockout_lines`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from orchestrator.contract.common import OrderState, Reason
from orchestrator.contract.envelope import Envelope
from orchestrator.contract.orders import OrderCreated
from orchestrator.contract.pipeline import (
    OrderValidated,
    PlanCancelled,
    PlanDecided,
    PlanOutcome,
    RedecideRequested,
    Repair,
    RepairOutcome,
)
from orchestrator.domain.additions import customer_order, place_additions
from orchestrator.domain.learning import RoutingRisk, learning_sentences
from orchestrator.domain.network import NetworkView
from orchestrator.domain.policy import Policy
from orchestrator.domain.repair import excluded_for, limits_broken, repair_order
from orchestrator.domain.sourcing import decide
from orchestrator.domain.supply import (
    RELEASE_WAITING,
    order_to_plan_now,
    preorder_lines,
    preorder_plan,
    set_aside,
    waits_only_for_release,
    with_preorders,
)
from orchestrator.promise.token import with_promise_check
from orchestrator.runtime.measures import StageMeasures
from orchestrator.runtime.metrics import RuntimeMetrics
from orchestrator.runtime.stage import HandlerContext, RejectEvent, Stage
from orchestrator.stages.common import (
    EXCEPTIONS,
    PLANS,
    REROUTES,
    STATUS,
    VALIDATED,
    OrderPathDeps,
    emit_status,
    on_the_latest_network,
)
from orchestrator.stages.decide_reads import DecideReads, OrderRow, around, planned_load, read_decisions
from orchestrator.stages.learning_store import RiskView
from orchestrator.stages.lookahead_view import LookaheadView
from orchestrator.stages.policy_store import PolicyView

#: How often reserve may send one order back before the plan stops asking for contested stock.
MAX_REDECIDES = 5

#: Where a plan came from: the `origin` label of decide-node's counters.
ORIGIN_ORDER, ORIGIN_REDECIDE, ORIGIN_REPAIR = "order", "redecide", "repair"
ORIGINS = (ORIGIN_ORDER, ORIGIN_REDECIDE, ORIGIN_REPAIR)
#: The outcome label of a plan in which nothing ships and only pre-orders wait: the order is on hold
#: for a release date, which is neither a back-order nor a shortage.
PREORDER_WAIT = "preorder_wait"
#: Outcomes whose plans leave lines waiting for stock.
_SHORT_OUTCOMES = (PlanOutcome.PARTIAL, PlanOutcome.BACKORDER, PlanOutcome.HOLD_FOR_STOCK)


def decision_outcome(plan: PlanDecided) -> str:
    """The plan's outcome as its counters say it."""
    return PREORDER_WAIT if waits_only_for_release(plan) else plan.outcome.value


def stockout_lines(plan: PlanDecided) -> int:
    """How many of the order's lines the plan leaves waiting for stock: a stock-out each.

    The plan's back-ordered lines, so in a hold_for_stock plan every line of the order (it waits
    whole). Pre-order lines waiting for their release date are not short of anything, and a policy
    addition left out is not something the customer waits for: neither counts.
    """
    if plan.outcome not in _SHORT_OUTCOMES or waits_only_for_release(plan):
        return 0
    preorders = {line.line_id for line in preorder_lines(plan.order, plan.decided_at.date())}
    additions = {line.line_id for line in plan.order.lines if line.addition is not None}
    return len({b.line_id for b in plan.backordered} - preorders - additions)


def _prepare_metrics(m: RuntimeMetrics) -> None:
    for origin in ORIGINS:
        for outcome in (*(o.value for o in PlanOutcome), PREORDER_WAIT):
            m.decisions.labels(outcome, origin)
        m.split_decisions.labels(origin)
        for short in _SHORT_OUTCOMES:
            m.stockout_lines.labels(short.value, origin)


def count_decision(measures: StageMeasures, ctx: HandlerContext, plan: PlanDecided, origin: str) -> None:
    """Count the plan once the decision commits (a retried batch decides again: it counts once)."""
    outcome, short, split = decision_outcome(plan), stockout_lines(plan), len(plan.shipments) > 1

    def count(m: RuntimeMetrics) -> None:
        m.decisions.labels(outcome, origin).inc()
        if split:
            m.split_decisions.labels(origin).inc()
        if short:
            m.stockout_lines.labels(outcome, origin).inc(short)

    measures.count(ctx, count)


async def stock_view(
    ctx: HandlerContext, order: OrderCreated, *, behind_the_queue: bool = False
) -> dict[tuple[str, str], int]:
    """Units each node can promise per SKU. `behind_the_queue`: a new order comes after the lines
    already waiting for that SKU (back-orders, pre-orders; reserve's queue), so stock they are
    owed is not the new order's to take."""
    reads = _reads(ctx)
    if reads is not None:
        read = reads.stock(order, behind_the_queue)
        if read is not None:
            return read
    skus = sorted({line.sku for line in order.lines})
    rows = await ctx.db.fetch(
        "SELECT node_id, sku, on_hand - reserved - safety_stock AS available FROM reserve_ledger"
        " WHERE sku = ANY($1::text[])",
        skus,
    )
    stock = {(r["node_id"], r["sku"]): max(0, r["available"]) for r in rows}
    if behind_the_queue:
        owed = await ctx.db.fetch(
            "SELECT sku, sum(quantity) AS units FROM reserve_waiting"
            " WHERE sku = ANY($1::text[]) AND order_id <> $2 GROUP BY sku",
            skus,
            order.order_id,
        )
        stock = set_aside(stock, {r["sku"]: int(r["units"]) for r in owed})
    return stock


async def with_additions(
    ctx: HandlerContext, plan: PlanDecided, order: OrderCreated, network: NetworkView
) -> PlanDecided:
    """`plan`, made for the customer's lines of `order`, with the order's policy additions riding
    along on its shipments where the node has them to spare (`orchestrator.domain.additions`)."""
    if all(line.addition is None for line in order.lines):
        return plan
    # Behind the queue: a free sample never takes a unit a waiting customer line is owed.
    stock = await stock_view(ctx, order, behind_the_queue=True) if plan.shipments else {}
    return place_additions(plan, order, stock=stock, network=network)


async def node_load(ctx: HandlerContext, network: NetworkView) -> dict[str, int]:
    """Shipments planned per node on the day a shipment planned now would leave it: what `decide`
    checks capacity against."""
    reads = _reads(ctx)
    utc_day = ctx.now.astimezone(UTC).date()
    if reads is not None and reads.load_day == utc_day:
        planned = reads.load
    else:
        planned = await planned_load(ctx.db, around(utc_day))
    return network.load_on_ship_dates(planned, ctx.now)


def status_of(plan: PlanDecided) -> tuple[OrderState, tuple[Reason, ...]]:
    if plan.outcome in (PlanOutcome.SHIP, PlanOutcome.PARTIAL):
        return OrderState.PLANNED, ()
    if waits_only_for_release(plan):
        return OrderState.ON_HOLD, (Reason(code="preorder", message=plan.explanation[-1]),)
    if plan.outcome is PlanOutcome.BACKORDER:
        return OrderState.BACK_ORDERED, (Reason(code="no_stock", message="no node has the stock now"),)
    if plan.outcome is PlanOutcome.HOLD_FOR_STOCK:
        return OrderState.ON_HOLD, (
            Reason(code="hold_for_stock", message="waiting until the whole order can ship"),
        )
    return OrderState.NEEDS_ATTENTION, tuple(
        Reason(code="unfulfillable", message=line) for line in plan.explanation[:3]
    )


def _reads(ctx: HandlerContext) -> DecideReads | None:
    return ctx.batch if isinstance(ctx.batch, DecideReads) else None


async def order_row(ctx: HandlerContext, order_id: str) -> OrderRow | None:
    """decide-node's row of the order, locked to the batch's commit (None: no plan or cancel yet)."""
    reads = _reads(ctx)
    if reads is not None and order_id in reads.orders:
        return reads.orders[order_id]
    row = await ctx.db.fetchrow(
        "SELECT latest_version, sequence, cancelled FROM decide_orders WHERE order_id = $1 FOR UPDATE",
        order_id,
    )
    return None if row is None else OrderRow(row["latest_version"], row["sequence"], row["cancelled"])


_WRITE_ORDER = (
    "INSERT INTO decide_orders (order_id, latest_version, sequence, cancelled) VALUES ($1, $2, $3, $4)"
    " ON CONFLICT (order_id) DO UPDATE SET latest_version = $2, sequence = $3, cancelled = $4"
)


async def write_order(ctx: HandlerContext, order_id: str, row: OrderRow) -> None:
    """Make `row` the order's row: with the batch's writes when the batch read it, else now.

    One statement for plans and cancels alike, so the batch's writes of one order keep their order.
    """
    reads = _reads(ctx)
    args = (order_id, row.latest_version, row.sequence, row.cancelled)
    if reads is not None and order_id in reads.orders:
        reads.wrote(order_id, row)
        ctx.defer(_WRITE_ORDER, *args)
    else:
        await ctx.db.execute(_WRITE_ORDER, *args)


async def record(ctx: HandlerContext, plan: PlanDecided) -> None:
    """Keep the plan for `explain`, make it the order's latest version, and count its shipments
    toward their nodes' days for the rest of the batch."""
    args = (
        plan.order_id,
        plan.plan_version,
        plan.sequence,
        plan.outcome.value,
        plan.model_dump_json(),
        ctx.now,
    )
    statement = (
        "INSERT INTO decide_plans (order_id, plan_version, sequence, outcome, plan_json, decided_at)"
        " VALUES ($1, $2, $3, $4, $5, $6)"
    )
    # Nothing in decide-node reads a plan back; release reads it once this batch has committed.
    ctx.defer(statement, *args)
    reads = _reads(ctx)
    if reads is not None:
        reads.planned(plan)
    # Never cancelled here: both callers return before planning a cancelled order.
    await write_order(ctx, plan.order_id, OrderRow(plan.plan_version, plan.sequence, cancelled=False))


def decide_node_stage(deps: OrderPathDeps) -> Stage:
    risk = RiskView(deps.policy.learning)
    policies = PolicyView(deps.policy)
    measures = StageMeasures("decide-node-measures", _prepare_metrics)
    # Opportunity costs of the policies in use that look ahead (none while none does).
    lookahead = LookaheadView(lambda: (policies.active, policies.shadow), lambda: deps.network.state)

    def decided(plan: PlanDecided, learned: RoutingRisk) -> PlanDecided:
        """The plan with what learning from execution did to it, in words."""
        said = learning_sentences(
            [(s.node_id, s.carrier.service_id) for s in plan.shipments],
            [c.node_id for c in plan.candidates],
            learned,
        )
        return plan.model_copy(update={"explanation": (*plan.explanation, *said)}) if said else plan

    async def probe_taken(ctx: HandlerContext, plan: PlanDecided, learned: RoutingRisk) -> str | None:
        """Claim the one probe of every subject on probation the plan uses; the first subject whose
        probe another order already has, or None when the plan may stand."""
        for s in plan.shipments:
            for subject in (f"node:{s.node_id}", f"service:{s.carrier.service_id}"):
                period = learned.probation.get(subject)
                if period is None:
                    continue
                await ctx.db.execute(
                    "INSERT INTO decide_probes (subject, period, order_id) VALUES ($1, $2, $3)"
                    " ON CONFLICT (subject, period) DO NOTHING",
                    subject,
                    period,
                    plan.order_id,
                )
                holder = await ctx.db.fetchval(
                    "SELECT order_id FROM decide_probes WHERE subject = $1 AND period = $2", subject, period
                )
                if holder != plan.order_id:
                    return subject
        return None

    async def decide_learning(
        ctx: HandlerContext, order: OrderCreated, **kwargs: Any
    ) -> tuple[PlanDecided, RoutingRisk]:
        """decide() with what execution taught; a subject on probation takes one probe, so an order
        that would be a second is decided again without it. Returns the learning it decided with."""
        learned = risk.state
        opportunity = lookahead.prices_for(kwargs["policy"])
        plan = decide(order, risk=learned, opportunity=opportunity, **kwargs)
        for _ in range(4):
            taken = await probe_taken(ctx, plan, learned)
            if taken is None:
                break
            learned = learned.without(
                taken, "on probation after its cool-down; another order is its one probe"
            )
            plan = decide(order, risk=learned, opportunity=opportunity, **kwargs)
        return decided(plan, learned), learned

    def shadow_plan(
        shadow: Policy,
        on_sale: OrderCreated,
        order: OrderCreated,
        learned: RoutingRisk,
        inputs: dict[str, Any],
        now: datetime,
    ) -> PlanDecided:
        """The plan `shadow` would have made on the active plan's inputs (the same stock, capacity,
        time and learning); it claims no probe and is never emitted."""
        opportunity = lookahead.prices_for(shadow)
        plan = decided(
            decide(on_sale, policy=shadow, risk=learned, opportunity=opportunity, **inputs), learned
        )
        return with_preorders(plan, order, now.date()) if on_sale is not order else plan

    async def plan_order(
        ctx: HandlerContext,
        order: OrderCreated,
        sequence: int,
        *,
        origin: str = ORIGIN_ORDER,
        attempt: int = 0,
        excluded: frozenset[str] = frozenset(),
    ) -> None:
        row = await order_row(ctx, order.order_id)
        if row is not None and (row.cancelled or sequence < row.sequence):
            return  # the order moved on (amended again, or cancelled) since this request was made
        version = (row.latest_version if row else 0) + 1
        # Pre-order lines wait for their release date: only what is on sale today is planned now.
        # Policy additions never hold up or split the customer's order: the customer's lines are
        # planned alone, then each addition rides along on one of their shipments or is left out.
        validated, order = order, customer_order(order)
        on_sale = order_to_plan_now(order, ctx.now.date())
        # One read of the deployed policies for the whole decision.
        policy, shadow = policies.active, policies.shadow
        if on_sale is None:
            plan = preorder_plan(
                order,
                sequence=sequence,
                plan_version=version,
                policy_version=policy.version,
                now=ctx.now,
            )
            plan = await with_additions(ctx, plan, validated, deps.network.state)
            await record(ctx, plan)
            count_decision(measures, ctx, plan, origin)
            ctx.emit(PLANS, plan)
            state, reasons = status_of(plan)
            emit_status(ctx, order.order_id, state, sequence, reasons=reasons, detail=plan.explanation[0])
            return
        capacity_used = await node_load(ctx, deps.network.state)
        inputs: dict[str, Any] = dict(
            stock=await stock_view(ctx, on_sale, behind_the_queue=True),
            capacity_used=capacity_used,
            now=ctx.now,
            sequence=sequence,
            plan_version=version,
            attempt=attempt,
            excluded_nodes=excluded,
        )

        async def judge(network: NetworkView) -> tuple[PlanDecided, RoutingRisk]:
            inputs["network"] = network
            return await decide_learning(ctx, on_sale, policy=policy, **inputs)

        # Lines left unplanned may be for want of a node the network view has not folded yet.
        plan, learned = await on_the_latest_network(
            deps.network, ctx.now, judge, lambda decided: decided[0].outcome is not PlanOutcome.SHIP
        )
        network = inputs["network"]
        if on_sale is not order:
            plan = with_preorders(plan, order, ctx.now.date())
        if shadow is not None:
            policies.record_shadow(
                ctx,
                plan,
                lambda: shadow_plan(shadow, on_sale, order, learned, inputs, ctx.now),
                network=network,
                capacity_used=capacity_used,
            )
        plan = with_promise_check(plan, order)
        plan = await with_additions(ctx, plan, validated, deps.network.state)
        await record(ctx, plan)
        count_decision(measures, ctx, plan, origin)
        ctx.emit(PLANS, plan)
        state, reasons = status_of(plan)
        emit_status(
            ctx,
            order.order_id,
            state,
            sequence,
            reasons=reasons,
            detail=plan.explanation[0] if plan.explanation else None,
        )

    async def repair(ctx: HandlerContext, msg: RedecideRequested, repair: Repair) -> None:
        """Plan a playbook's repair; answer the exceptions stage when it cannot be done within limits."""

        def failed(detail: str) -> None:
            ctx.emit(
                EXCEPTIONS,
                RepairOutcome(
                    order_id=msg.order_id,
                    exception_id=repair.exception_id,
                    action=repair.action,
                    succeeded=False,
                    detail=detail,
                ),
            )

        row = await order_row(ctx, msg.order_id)
        if row is not None and row.cancelled:
            failed("the order is cancelled")
            return
        try:
            part = repair_order(msg.order, repair)
            # An added line is re-planned only riding along with the customer's lines, never alone.
            customer_part = customer_order(part)
        except ValueError as exc:
            failed(str(exc))
            return
        network = deps.network.state
        excluded = excluded_for(repair, frozenset(msg.excluded_nodes), frozenset(network.nodes))
        version = (row.latest_version if row else 0) + 1
        plan, _ = await decide_learning(
            ctx,
            customer_part,
            network=network,
            stock=await stock_view(ctx, customer_part),
            capacity_used=await node_load(ctx, network),
            policy=policies.active,
            now=ctx.now,
            sequence=msg.sequence,
            plan_version=version,
            attempt=msg.attempt,
            excluded_nodes=excluded,
        )
        # Waiting lines whose stock came are not a repair with limits: whatever the plan is (some may
        # wait again), reserve needs it to put them back in their queue.
        broken = None if repair.action == RELEASE_WAITING else limits_broken(plan, msg.order, repair)
        if broken is not None:
            failed(broken)
            return
        plan = await with_additions(ctx, plan, part, network)
        plan = plan.model_copy(update={"repair": repair})
        await record(ctx, plan)
        count_decision(measures, ctx, plan, ORIGIN_REPAIR)
        ctx.emit(PLANS, plan)

    async def handle(event: Envelope, ctx: HandlerContext) -> None:
        msg = event.data
        if isinstance(msg, OrderValidated):
            if msg.action == "plan":
                await plan_order(ctx, msg.order, msg.sequence)
                return
            row = await order_row(ctx, msg.order_id)
            latest = row.latest_version if row is not None else 0
            await write_order(ctx, msg.order_id, OrderRow(latest, msg.sequence, True))
            ctx.emit(
                PLANS,
                PlanCancelled(order_id=msg.order_id, sequence=msg.sequence, reason=msg.reason or "cancelled"),
            )
        elif isinstance(msg, RedecideRequested) and msg.repair is not None:
            await repair(ctx, msg, msg.repair)
        elif isinstance(msg, RedecideRequested):
            # Past the limit the order stops excluding anything and simply takes what the fresh stock allows.
            excluded = frozenset(msg.excluded_nodes) if msg.attempt <= MAX_REDECIDES else frozenset()
            await plan_order(
                ctx, msg.order, msg.sequence, origin=ORIGIN_REDECIDE, attempt=msg.attempt, excluded=excluded
            )
        else:  # pragma: no cover - `accepts` lets nothing else through
            raise RejectEvent(f"decide-node does not handle {event.type}")

    return Stage(
        name="decide-node",
        inputs=(VALIDATED, REROUTES),
        outputs=(PLANS, STATUS, EXCEPTIONS),
        handler=handle,
        uses_database=True,
        read_batch=read_decisions,
        accepts=frozenset({OrderValidated.event_type, RedecideRequested.event_type}),
        views=(deps.network, risk, policies, lookahead, measures),
        description="chooses nodes, shipments and carriers for each order, with the reasons",
    )
