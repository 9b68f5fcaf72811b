"""`orchestrator routing status|override`: what routing has learned from execution, and the
operator's hand on the circuit breakers."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg

from orchestrator.domain.learning import Breaker, Measures, Override
from orchestrator.domain.policy import PolicyError, load_policy
from orchestrator.settings import Settings
from orchestrator.stages.learning_store import breakers, measures_since, override


def add_routing_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], func: Callable[[argparse.Namespace], int]
) -> None:
    routing = sub.add_parser("routing", help="what routing learned from execution; override circuit breakers")
    actions = routing.add_subparsers(dest="action", required=True)
    actions.add_parser("status", help="measures of every node and carrier service, and their breakers")
    force = actions.add_parser(
        "override", help="force a node or service out of (open) or into (closed) routing"
    )
    force.add_argument("subject", help="node:<node id> or service:<carrier service id>")
    force.add_argument("state", choices=["open", "closed", "clear"], help="clear: back to the measures")
    force.add_argument("--reason", default="", help="why, for the record and the plans' explanations")
    routing.set_defaults(func=func)


def _row(subject: str, m: Measures, b: Breaker | None, now: datetime) -> tuple[str, ...]:
    state = b.effective(now).value if b else "closed"
    if b and b.override:
        state += f" (override: {b.override_reason or 'no reason given'})"
    elif b and b.reason and state != "closed":
        state += f" ({b.reason})"
    if m.is_node:
        accepted, short = f"{m.acceptance_rate:.0%} accepted", f"{m.short_pick_rate:.0%} short"
        measures = f"{accepted}, {short}, {m.on_time_ship_rate:.0%} on time"
    else:
        measures = f"{m.on_time_delivery_rate:.0%} on time, {m.lost} lost, {m.mean_lateness_days:.1f} d late"
    return subject, str(m.samples), f"{m.failure_rate:.0%}", measures, state


async def _status(database_url: str, hours: int) -> list[tuple[str, ...]]:
    conn = await asyncpg.connect(database_url)
    try:
        now = datetime.now(UTC)
        measures = await measures_since(conn, now - timedelta(hours=hours))
        known = await breakers(conn)
    finally:
        await conn.close()
    subjects = sorted(set(measures) | set(known))
    return [_row(s, measures.get(s, Measures(s)), known.get(s), now) for s in subjects]


async def _override(database_url: str, subject: str, state: str, reason: str) -> Breaker:
    conn = await asyncpg.connect(database_url)
    try:
        return await override(conn, subject, None if state == "clear" else Override(state), reason)
    finally:
        await conn.close()


def cmd_routing(args: argparse.Namespace, settings: Settings) -> int:
    try:
        policy = load_policy()
    except PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.action == "override":
            if not args.subject.startswith(("node:", "service:")):
                print("error: the subject is node:<node id> or service:<carrier service id>", file=sys.stderr)
                return 2
            b = asyncio.run(_override(settings.database_url, args.subject, args.state, args.reason))
            now = datetime.now(UTC)
            print(
                f"{b.subject}: {b.effective(now).value}"
                + (f" (override {b.override.value})" if b.override else "")
            )
            return 0
        rows = asyncio.run(_status(settings.database_url, policy.learning.window_hours))
    except asyncpg.UndefinedTableError:
        print("error: the learning tables do not exist yet; run `orchestrator db migrate`", file=sys.stderr)
        return 2
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"error: cannot read what routing learned: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print("nothing learned yet: no execution events counted")
        return 0
    table = [("SUBJECT", "OUTCOMES", "FAILING", f"LAST {policy.learning.window_hours} H", "BREAKER"), *rows]
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
    return 0


__all__ = ["add_routing_parser", "cmd_routing"]
