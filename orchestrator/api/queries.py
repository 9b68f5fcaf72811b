"""What customer service asks about an order, answered from the tables the stages keep.

Reads status-sync's `status_orders` (the current state) and `status_events`
(the whole story, in the order it was recorded), decide-node's
`decide_plans` (why it ships from where it does), and the events parked until
what they wait for comes (monitor's `monitor_parked_events`, returns'
`returns_parked_events`). Every function takes an asyncpg connection or pool
and returns plain data (datetimes stay datetimes,
JSON columns are decoded), so the HTTP API and the command line share them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeAlias

import asyncpg
import orjson

from orchestrator.contract.pipeline import PlanDecided
from orchestrator.domain.explain import explain_plan

#: A connection or a pool: both answer fetch/fetchrow the same way.
Queryable: TypeAlias = asyncpg.Connection | asyncpg.Pool


def _json(raw: Any) -> Any:
    # asyncpg hands jsonb over as text unless the caller registered a codec: accept both.
    return orjson.loads(raw) if isinstance(raw, str | bytes) else raw


async def order_state(conn: Queryable, order_id: str) -> dict[str, Any] | None:
    """The order's current state from the projection, or None when status-sync never saw it."""
    row = await conn.fetchrow(
        "SELECT order_id, state, sequence, reasons, stage, updated_at FROM status_orders WHERE order_id = $1",
        order_id,
    )
    if row is None:
        return None
    return {
        "order_id": row["order_id"],
        "state": row["state"],
        "sequence": row["sequence"],
        "reasons": _json(row["reasons"]),
        "stage": row["stage"],
        "updated_at": row["updated_at"],
    }


async def order_timeline(conn: Queryable, order_id: str) -> list[dict[str, Any]]:
    """Every stored event of the order in the order status-sync recorded it (empty when unknown)."""
    rows = await conn.fetch(
        "SELECT position, occurred_at, recorded_at, source, event_type, summary, event_id, causation_id,"
        " topic FROM status_events WHERE order_id = $1 ORDER BY position",
        order_id,
    )
    return [dict(r) for r in rows]


async def order_explanation(conn: Queryable, order_id: str) -> dict[str, Any] | None:
    """The latest plan of the order, as JSON and in words; None when no plan was ever made."""
    row = await conn.fetchrow(
        "SELECT plan_version, plan_json, decided_at, count(*) OVER () AS plans"
        " FROM decide_plans WHERE order_id = $1 ORDER BY plan_version DESC LIMIT 1",
        order_id,
    )
    if row is None:
        return None
    raw = row["plan_json"]
    # Parsed from the JSON text where there is one, exactly as `orchestrator explain` does.
    plan = (
        PlanDecided.model_validate_json(raw)
        if isinstance(raw, str | bytes)
        else PlanDecided.model_validate(raw)
    )
    return {
        "order_id": order_id,
        "plan_version": row["plan_version"],
        "plans": row["plans"],
        "decided_at": row["decided_at"],
        "plan": _json(raw),
        "text": explain_plan(plan),
    }


async def parked_events(conn: Queryable, order_id: str) -> list[dict[str, Any]]:
    """Events of the order that wait for what they are about: node and carrier events that monitor
    keeps until their work is released, node return events that returns keeps until the return is
    authorised, a return authorisation that returns keeps until a shipment of the goods is seen (a
    cancelled order's, a line an amendment removed); in the order they were parked (empty when none waits)."""
    rows = await conn.fetch(
        "SELECT parked_at, event_type, event_id, awaited, source_topic FROM ("
        " SELECT parked_at, event_type, event_id, awaited, source_topic, arrival, 0 AS stage"
        " FROM monitor_parked_events WHERE order_id = $1"
        " UNION ALL SELECT parked_at, event_type, event_id, CASE WHEN event_type = 'return.authorised.v1'"
        " THEN 'a shipment of order ' || order_id || ' (return ' || return_id || ')'"
        " ELSE 'the authorisation of return ' || return_id || ' of order ' || order_id END,"
        " source_topic, arrival, 1"
        " FROM returns_parked_events WHERE order_id = $1) AS parked"
        " ORDER BY parked_at, stage, arrival",
        order_id,
    )
    return [dict(r) for r in rows]


def _utc_ms(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def timeline_text(
    order_id: str,
    state: dict[str, Any] | None,
    events: list[dict[str, Any]],
    parked: list[dict[str, Any]] | None = None,
) -> str:
    """The story for a terminal: a line per event (UTC time, source, type, summary), then the state,
    then the events parked until what they wait for comes (`parked_events`), if any."""
    waiting = [
        f"  {_utc_ms(e['parked_at'])}  {e['event_type']}  waits for {e['awaited']}" for e in parked or ()
    ]
    if waiting:
        waiting.insert(0, f"Parked until what they wait for comes: {len(waiting)} event(s)")
    return "\n".join([_story_text(order_id, state, events), *waiting])


def _story_text(order_id: str, state: dict[str, Any] | None, events: list[dict[str, Any]]) -> str:
    out = [f"Order {order_id}: {len(events)} event(s)"]
    rows = [(_utc_ms(e["occurred_at"]), e["source"], e["event_type"], e["summary"]) for e in events]
    source_width = max((len(r[1]) for r in rows), default=0)
    type_width = max((len(r[2]) for r in rows), default=0)
    out += [
        f"  {when}  {source:<{source_width}}  {kind:<{type_width}}  {summary}"
        for when, source, kind, summary in rows
    ]
    if state is None:
        out.append("Current state: none reported yet")
        return "\n".join(out)
    out.append(
        f"Current state: {state['state']} (transition {state['sequence']}"
        + (f", by {state['stage']}" if state["stage"] else "")
        + f", since {_utc_ms(state['updated_at'])})"
    )
    out += [f"  {reason['code']}: {reason['message']}" for reason in state["reasons"]]
    return "\n".join(out)


__all__ = [
    "Queryable",
    "order_explanation",
    "order_state",
    "order_timeline",
    "parked_events",
    "timeline_text",
]
