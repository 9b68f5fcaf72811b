"""The routing policies decide-node plans by, deployed from the database, and the shadow decisions.

Operators change the deployment with `orchestrator policy ...`, which appends to
`decide_policy_changes` (who, when, which version, its YAML). decide-node reads that record
through `PolicyView` every few seconds (a View, like learning's `RiskView`): the active policy
plans, the shadow policy (when one is deployed) plans the same decision beside it, and both are
written to `decide_shadow_plans`, never emitted. With no record, the active policy is the
process's policy file, as before. The deployment's rules and the comparison are pure, in
`orchestrator.domain.shadow`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import structlog

from orchestrator.contract.pipeline import PlanDecided
from orchestrator.domain.network import NetworkView
from orchestrator.domain.policy import Policy, PolicyError, parse_policy
from orchestrator.domain.shadow import (
    ACTIVE,
    SHADOW,
    Deployed,
    Deployment,
    PlanMeasures,
    PolicyAction,
    PolicyChange,
    ShadowDecision,
    compare,
    fold_changes,
    plan_change,
)
from orchestrator.runtime.metrics import RuntimeMetrics
from orchestrator.runtime.pause import sleep_unless
from orchestrator.runtime.periodic import read_periodically
from orchestrator.runtime.stage import HandlerContext
from orchestrator.runtime.views import cancel_task
from orchestrator.settings import Settings

#: How often decide-node reads the record of policy changes (seconds).
POLICY_REFRESH_ENV = "ORCHESTRATOR_POLICY_REFRESH_S"
DEFAULT_REFRESH_S = 5.0

_log = structlog.get_logger("orchestrator.policies")


# ------------------------------------------------------------------------------ the record of changes


def _change(row: asyncpg.Record) -> PolicyChange:
    return PolicyChange(
        id=row["id"],
        at=row["at"],
        who=row["who"],
        action=PolicyAction(row["action"]),
        role=row["role"],
        version=row["version"],
        policy_yaml=row["policy_yaml"],
        previous_version=row["previous_version"],
        note=row["note"],
    )


async def read_changes(conn: asyncpg.Connection | asyncpg.Pool, after: int = 0) -> list[PolicyChange]:
    """The changes after id `after`, oldest first."""
    rows = await conn.fetch("SELECT * FROM decide_policy_changes WHERE id > $1 ORDER BY id", after)
    return [_change(r) for r in rows]


async def change_policies(
    conn: asyncpg.Connection,
    action: PolicyAction,
    *,
    who: str,
    policy: Policy | None = None,
    policy_yaml: str | None = None,
    note: str = "",
) -> tuple[PolicyChange, Deployment]:
    """Append the change `action` makes now (DeploymentError when it cannot be made); returns the
    recorded change and the deployment after it."""
    async with conn.transaction():
        # One change at a time: two operators promoting at once must not both start from one state.
        # Readers (decide-node, `policy status`) are not blocked by this mode.
        await conn.execute("LOCK TABLE decide_policy_changes IN SHARE ROW EXCLUSIVE MODE")
        history = await read_changes(conn)
        state = fold_changes(history)
        new = plan_change(state, action, policy=policy, policy_yaml=policy_yaml, history=history)
        row = await conn.fetchrow(
            "INSERT INTO decide_policy_changes"
            " (who, action, role, version, policy_yaml, previous_version, note)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
            who,
            new.action.value,
            new.role,
            new.version,
            new.policy_yaml,
            new.previous_version,
            note,
        )
    change = _change(row)
    return change, state.apply(change)


# ------------------------------------------------------------------------------ shadow decisions

_SHADOW_INSERT = (
    "INSERT INTO decide_shadow_plans (order_id, plan_version, decided_at, active_version, shadow_version,"
    " differs, active_outcome, shadow_outcome, active_cost, shadow_cost, active_objective, shadow_objective,"
    " active_shipments, shadow_shipments, active_promise_hit, shadow_promise_hit,"
    " active_capacity_breaches, shadow_capacity_breaches, active_plan, shadow_plan)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,"
    " $19::jsonb, $20::jsonb)"
    # A decision is recorded once; an order's re-plan is another plan version, another row.
    " ON CONFLICT (order_id, plan_version) DO NOTHING"
)


def _shadow_args(d: ShadowDecision) -> tuple[object, ...]:
    a, s = d.active, d.shadow
    return (
        d.order_id,
        d.plan_version,
        d.decided_at,
        a.version,
        s.version,
        d.differs,
        a.outcome,
        s.outcome,
        a.cost,
        s.cost,
        a.objective,
        s.objective,
        a.shipments,
        s.shipments,
        a.promise_hit,
        s.promise_hit,
        a.capacity_breaches,
        s.capacity_breaches,
        orjson.dumps(a.plan).decode(),
        orjson.dumps(s.plan).decode(),
    )


def _measures(row: asyncpg.Record, role: str) -> PlanMeasures:
    plan = row[f"{role}_plan"]
    return PlanMeasures(
        version=row[f"{role}_version"],
        outcome=row[f"{role}_outcome"],
        cost=row[f"{role}_cost"],
        objective=row[f"{role}_objective"],
        shipments=row[f"{role}_shipments"],
        promise_hit=row[f"{role}_promise_hit"],
        capacity_breaches=row[f"{role}_capacity_breaches"],
        plan=orjson.loads(plan) if isinstance(plan, str | bytes) else plan,
    )


async def shadow_decisions(
    conn: asyncpg.Connection | asyncpg.Pool, since: datetime, until: datetime
) -> list[ShadowDecision]:
    """The shadowed decisions made in [since, until), oldest first."""
    rows = await conn.fetch(
        "SELECT * FROM decide_shadow_plans WHERE decided_at >= $1 AND decided_at < $2"
        " ORDER BY decided_at, order_id, plan_version",
        since,
        until,
    )
    return [
        ShadowDecision(
            order_id=r["order_id"],
            plan_version=r["plan_version"],
            decided_at=r["decided_at"],
            differs=r["differs"],
            active=_measures(r, ACTIVE),
            shadow=_measures(r, SHADOW),
        )
        for r in rows
    ]


# ------------------------------------------------------------------------------ decide-node's view


class PolicyView:
    """decide-node's policies: (active, shadow or None), read from the record every
    `refresh_seconds` (a View, for its life cycle). A decision uses the latest read."""

    def __init__(self, file_policy: Policy, refresh_seconds: float | None = None) -> None:
        self.name = "policies"
        self.topic = ""
        self.file_policy = file_policy
        self.refresh_seconds = (
            refresh_seconds
            if refresh_seconds is not None
            else float(os.environ.get(POLICY_REFRESH_ENV, DEFAULT_REFRESH_S))
        )
        self.deployment = Deployment()
        self._active = file_policy
        self._shadow: Policy | None = None
        self._parsed: dict[int, Policy | None] = {}
        self._ready = False
        self._task: asyncio.Task[None] | None = None
        self._metrics: RuntimeMetrics | None = None

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def active(self) -> Policy:
        return self._active

    @property
    def shadow(self) -> Policy | None:
        return self._shadow

    def bind_metrics(self, metrics: RuntimeMetrics) -> None:
        self._metrics = metrics
        self._report_deployed()

    async def start(self, settings: Settings, stop: asyncio.Event) -> None:
        if self._task is not None:
            return
        # The first read comes before any decision: an order planned by the policy file while the
        # record says another policy is active would be planned by the wrong one.
        conn: asyncpg.Connection | None = None
        delay = settings.backoff_initial_s
        while not stop.is_set() and not self._ready:
            try:
                conn = await asyncpg.connect(settings.database_url, command_timeout=30)
                await self.refresh(conn)
            except asyncpg.UndefinedTableError:
                # A database not migrated to policies yet has none deployed: plan by the file.
                _log.warning("no decide_policy_changes table yet; planning by the policy file")
                self._ready = True
            except Exception as exc:
                _log.warning("reading the deployed policies failed; retrying", error=repr(exc))
                conn = None
                await sleep_unless(stop, delay)
                delay = min(delay * 2, settings.backoff_max_s)
        # The first read is done: later ones come every `refresh_seconds`; a table not migrated yet
        # is no news (the file policy goes on planning).
        reading = read_periodically(
            settings,
            stop,
            self.refresh,
            self.refresh_seconds,
            what="reading the deployed policies",
            log=_log,
            conn=conn,
            wait_first=True,
            quiet=(asyncpg.UndefinedTableError,),
        )
        self._task = asyncio.create_task(reading, name="decide:policies")

    async def close(self) -> None:
        await cancel_task(self._task)
        self._task = None

    def _policy(self, deployed: Deployed) -> Policy | None:
        if deployed.change_id not in self._parsed:
            try:
                self._parsed[deployed.change_id] = parse_policy(
                    deployed.policy_yaml, f"decide_policy_changes #{deployed.change_id}"
                )
            except PolicyError as exc:
                # Validated when deployed; only a change of the policy model since can make it fail.
                _log.error("a deployed policy no longer validates", error=str(exc))
                self._parsed[deployed.change_id] = None
        return self._parsed[deployed.change_id]

    async def refresh(self, conn: asyncpg.Connection) -> None:
        changes = await read_changes(conn, self.deployment.last_change)
        if changes:
            self.deployment = now = fold_changes(changes, self.deployment)
            if now.active is None:
                self._active = self.file_policy
            else:
                # One that does not validate leaves the last good active policy in place.
                self._active = self._policy(now.active) or self._active
            self._shadow = self._policy(now.shadow) if now.shadow is not None else None
            _log.info(
                "deployed policies",
                active=self._active.version,
                shadow=self._shadow.version if self._shadow else None,
                change=now.last_change,
            )
            self._report_deployed()
        self._ready = True

    def _report_deployed(self) -> None:
        if self._metrics is None:
            return
        gauge = self._metrics.policy_deployed
        gauge.clear()
        gauge.labels(ACTIVE, self._active.version).set(1)
        if self._shadow is not None:
            gauge.labels(SHADOW, self._shadow.version).set(1)

    def record_shadow(
        self,
        ctx: HandlerContext,
        active_plan: PlanDecided,
        shadow_plan: Callable[[], PlanDecided],
        *,
        network: NetworkView,
        capacity_used: Mapping[str, int],
    ) -> None:
        """Plan the decision by the shadow policy too (`shadow_plan`, on the active plan's inputs),
        record both, and count them once the decision commits. The shadow plan is never emitted
        and never reserved; a shadow that fails is logged and changes nothing."""
        try:
            decision = compare(
                active_plan, shadow_plan(), network=network, capacity_used=capacity_used, now=ctx.now
            )
        except Exception:
            ctx.log.exception("the shadow policy could not plan this decision; it is not recorded")
            return
        # Appended, never read back in the batch: one executemany for the batch, no round trip here.
        ctx.defer(_SHADOW_INSERT, *_shadow_args(decision))
        ctx.after_commit(lambda: self._count(decision))

    def _count(self, d: ShadowDecision) -> None:
        m = self._metrics
        if m is None:
            return
        for role, measures in ((ACTIVE, d.active), (SHADOW, d.shadow)):
            labels: dict[str, Any] = {"role": role, "version": measures.version}
            m.shadow_decisions.labels(**labels).inc()
            m.shadow_shipping_cost.labels(**labels).inc(measures.cost)
            m.shadow_shipments.labels(**labels).inc(measures.shipments)
            m.shadow_planned.labels(**labels).inc(measures.planned)
            m.shadow_splits.labels(**labels).inc(measures.split)
            m.shadow_promise_hits.labels(**labels).inc(measures.promise_hit)
            m.shadow_capacity_breaches.labels(**labels).inc(measures.capacity_breaches)
        if d.differs:
            m.shadow_differing.labels(d.active.version, d.shadow.version).inc()


__all__ = [
    "DEFAULT_REFRESH_S",
    "POLICY_REFRESH_ENV",
    "PolicyView",
    "change_policies",
    "read_changes",
    "shadow_decisions",
]
