"""`orchestrator policy deploy|withdraw-shadow|promote|rollback|history|status` and
`orchestrator shadow report`: routing policies deployed to decide-node without a restart, tried
in shadow on live orders first, compared, promoted, and rolled back; every change recorded with
who made it and when."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from orchestrator.domain.playbooks import parse_duration
from orchestrator.domain.policy import Policy, PolicyError, load_policy, parse_policy
from orchestrator.domain.shadow import (
    Deployed,
    Deployment,
    DeploymentError,
    PolicyAction,
    PolicyChange,
    ShadowDecision,
    fold_changes,
    format_report,
    shadow_report,
)
from orchestrator.settings import Settings
from orchestrator.stages.policy_store import (
    DEFAULT_REFRESH_S,
    POLICY_REFRESH_ENV,
    change_policies,
    read_changes,
    shadow_decisions,
)

_FMT = "%Y-%m-%d %H:%M:%S UTC"


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (a container without one)
        return "unknown"


def add_policy_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], settings: Callable[[], Settings]
) -> None:
    """`policy ...` and `shadow report`; `settings` resolves the database address when one runs."""
    policy = sub.add_parser(
        "policy", help="deploy routing policies to decide-node: in shadow, promote, roll back, history"
    )
    actions = policy.add_subparsers(dest="action", required=True)

    def who_and_why(p: argparse.ArgumentParser) -> None:
        p.add_argument("--by", default=_user(), help="who makes the change, for the record (default: you)")
        p.add_argument("--note", default="", help="why, for the record")

    deploy = actions.add_parser("deploy", help="deploy a policy file: in shadow, or active at once")
    deploy.add_argument("file", help="the policy YAML (validated first)")
    deploy.add_argument(
        "--shadow",
        action="store_true",
        help="plan every order by it too, beside the active policy, without acting on it",
    )
    who_and_why(deploy)
    who_and_why(actions.add_parser("withdraw-shadow", help="stop planning by the shadow policy"))
    who_and_why(
        actions.add_parser("promote", help="make the shadow policy active (the one it replaces is kept)")
    )
    who_and_why(actions.add_parser("rollback", help="back to the active policy before the last promotion"))
    history = actions.add_parser("history", help="every change: who, when, which version, in which role")
    history.add_argument("--limit", type=int, default=50, help="the latest N changes (default 50)")
    actions.add_parser("status", help="the active and shadow policies now, and what a rollback returns to")
    policy.set_defaults(func=lambda args: cmd_policy(args, settings()))

    shadow = sub.add_parser("shadow", help="how the shadow policy would have done on live orders")
    shadow_actions = shadow.add_subparsers(dest="action", required=True)
    report = shadow_actions.add_parser(
        "report", help="active against shadow over a window, and the orders they planned differently"
    )
    report.add_argument("--since", default="1h", help="the window: the last 30m, 1h, 2d... (default 1h)")
    report.add_argument("--json", action="store_true", help="the report as JSON")
    report.add_argument("--limit", type=int, default=20, help="differing orders shown (default 20)")
    shadow.set_defaults(func=lambda args: cmd_shadow(args, settings()))


# ------------------------------------------------------------------------------ policy


def _describe(deployed: Deployed | None, by_id: dict[int, PolicyChange]) -> str:
    if deployed is None:
        return "the policy file of each decide-node process"
    change = by_id.get(deployed.change_id)
    if change is None:
        return deployed.version
    return (
        f"{deployed.version} (since {change.at.astimezone(UTC).strftime(_FMT)},"
        f" {change.action.value} by {change.who}, change #{change.id})"
    )


def _file_policy_hint() -> str:
    try:
        # The stages' environment may name another file: this is the one this shell would load.
        return f" (this shell's policy file: {load_policy().version})"
    except PolicyError:
        return ""


def _status(state: Deployment, changes: list[PolicyChange]) -> str:
    by_id = {c.id: c for c in changes}
    active = _describe(state.active, by_id)
    if state.active is None:
        active += _file_policy_hint()
    lines = [
        f"active  {active}",
        f"shadow  {_describe(state.shadow, by_id) if state.shadow else 'none'}",
    ]
    if state.earlier:
        back = state.earlier[-1]
        lines.append(f"rollback returns to {back.version if back else 'the policy file'}")
    return "\n".join(lines)


def _history(changes: list[PolicyChange], limit: int) -> str:
    if not changes:
        return "no policy was ever deployed: decide-node plans by its policy file"
    table = [("ID", "AT", "WHO", "ACTION", "ROLE", "VERSION", "BEFORE", "NOTE")]
    for c in changes[-max(1, limit) :]:
        table.append(
            (
                str(c.id),
                c.at.astimezone(UTC).strftime(_FMT),
                c.who,
                c.action.value,
                c.role,
                c.version or ("(policy file)" if c.role == "active" else "-"),
                c.previous_version or ("(policy file)" if c.role == "active" else "-"),
                c.note,
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(7)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row[:7], widths, strict=True)) + "  " + row[7]
        for row in table
    ).rstrip()


def _changed(change: PolicyChange, state: Deployment) -> str:
    when = f"change #{change.id} by {change.who} at {change.at.astimezone(UTC).strftime(_FMT)}"
    version = change.version or "the policy file"
    before = change.previous_version or ("the policy file" if change.role == "active" else "none")
    if change.action is PolicyAction.DEPLOY_SHADOW:
        text = f"{version} deployed in shadow ({when}"
        text += f", replacing shadow {before})" if change.previous_version else ")"
        text += "; decide-node plans every order by it too, acting only on the active policy."
        text += " `orchestrator shadow report` compares them."
    elif change.action is PolicyAction.WITHDRAW_SHADOW:
        text = f"shadow {before} withdrawn ({when})."
    elif change.action is PolicyAction.ROLLBACK:
        text = f"{version} is active again ({when}), replacing {before}."
    else:
        text = f"{version} is active ({when}), replacing {before};"
        text += " `orchestrator policy rollback` returns to it."
    refresh = f"decide-node reads the change within {POLICY_REFRESH_ENV} ({DEFAULT_REFRESH_S:g} s by default)"
    return f"{text}\n{refresh}"


async def _run_policy(args: argparse.Namespace, database_url: str) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        if args.action in ("status", "history"):
            changes = await read_changes(conn)
            if args.action == "history":
                return _history(changes, args.limit)
            return _status(fold_changes(changes), changes)
        action = {
            "withdraw-shadow": PolicyAction.WITHDRAW_SHADOW,
            "promote": PolicyAction.PROMOTE,
            "rollback": PolicyAction.ROLLBACK,
        }.get(args.action)
        policy: Policy | None = None
        text: str | None = None
        if action is None:  # deploy
            action = PolicyAction.DEPLOY_SHADOW if args.shadow else PolicyAction.ACTIVATE
            policy, text = args.policy, args.policy_text
        change, state = await change_policies(
            conn, action, who=args.by, policy=policy, policy_yaml=text, note=args.note
        )
        return _changed(change, state)
    finally:
        await conn.close()


def cmd_policy(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "deploy":
        path = Path(args.file)
        try:
            args.policy_text = path.read_text(encoding="utf-8")
        except OSError as exc:
            print(f"error: policy {path}: cannot be read: {exc.strerror or exc}", file=sys.stderr)
            return 2
        try:
            # Validated here, before it is recorded: decide-node must never read a policy it refuses.
            args.policy = parse_policy(args.policy_text, str(path))
        except PolicyError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if getattr(args, "by", "x").strip() == "":
        print("error: --by must name someone", file=sys.stderr)
        return 2
    try:
        print(asyncio.run(_run_policy(args, settings.database_url)))
    except DeploymentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except asyncpg.UndefinedTableError:
        print("error: the policy tables do not exist yet; run `orchestrator db migrate`", file=sys.stderr)
        return 2
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"error: cannot reach the deployed policies: {exc}", file=sys.stderr)
        return 2
    return 0


# ------------------------------------------------------------------------------ shadow report


async def _report_rows(database_url: str, since: datetime, until: datetime) -> list[ShadowDecision]:
    conn = await asyncpg.connect(database_url)
    try:
        return await shadow_decisions(conn, since, until)
    finally:
        await conn.close()


def cmd_shadow(args: argparse.Namespace, settings: Settings) -> int:
    try:
        window = parse_duration(args.since)
    except ValueError as exc:
        print(f"error: --since: {exc}", file=sys.stderr)
        return 2
    until = datetime.now(UTC)
    since = until - window
    try:
        decisions = asyncio.run(_report_rows(settings.database_url, since, until))
    except asyncpg.UndefinedTableError:
        print("error: the shadow tables do not exist yet; run `orchestrator db migrate`", file=sys.stderr)
        return 2
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"error: cannot read the shadow decisions: {exc}", file=sys.stderr)
        return 2
    report = shadow_report(decisions, since=since, until=until, limit=args.limit)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(format_report(report))
    return 0


__all__ = ["add_policy_parsers", "cmd_policy", "cmd_shadow"]
