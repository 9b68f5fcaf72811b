"""`orchestrator faults` (make faults): flags, and the report as tables."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from orchestrator.faults.plan import FaultBudget


def add_faults_parser(sub: Any) -> None:
    faults = sub.add_parser(
        "faults",
        help="orders through every stage while processes are killed and servers restarted; then an audit",
    )
    faults.add_argument("--orders", type=int, default=20_000, help="orders the OMS places (default 20000)")
    faults.add_argument("--rate", type=float, default=40.0, help="orders per second (default 40)")
    faults.add_argument("--instances", type=int, default=2, help="processes of each stage (default 2)")
    faults.add_argument("--kills", type=int, default=30, help="SIGKILLs of stage processes (default 30)")
    faults.add_argument(
        "--broker-restarts", type=int, default=2, help="first clean, then a crash (default 2)"
    )
    faults.add_argument(
        "--database-restarts", type=int, default=1, choices=[0, 1], help="crashes (default 1)"
    )
    faults.add_argument("--no-node-closure", action="store_true", help="do not close a DC during the run")
    faults.add_argument(
        "--kill-one-of-each",
        action="store_true",
        help="half-way, kill one instance of every stage for good (scale-out; needs --instances 2+)",
    )
    faults.add_argument("--seed", type=int, default=7)
    faults.add_argument("--summary", type=Path, help="also write the report as JSON here")
    faults.set_defaults(func=cmd_faults)


def cmd_faults(args: argparse.Namespace) -> int:
    from orchestrator.faults.driver import FaultRunOptions, run_faults
    from orchestrator.settings import Settings
    from orchestrator.sim.live.children import ChildFailed
    from orchestrator.sim.live.driver import NetworkSize

    options = FaultRunOptions(
        orders=args.orders,
        rate=args.rate,
        instances=args.instances,
        budget=FaultBudget(
            kills=args.kills,
            broker_restarts=args.broker_restarts,
            database_restarts=args.database_restarts,
            close_node=not args.no_node_closure,
            kill_one_of_each=args.kill_one_of_each,
        ),
        seed=args.seed,
        network=NetworkSize(seed=args.seed),
        summary_path=args.summary,
    )
    # The driver's own observer would print every failed reconnect while the broker is down on purpose.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        report = asyncio.run(run_faults(options, Settings.from_env().state_dir, say=_say))
    except (ChildFailed, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report_text(report))
    return 1 if report["audit"]["problems"] else 0


def _say(line: str) -> None:
    print(line, flush=True)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def report_text(report: dict[str, Any]) -> str:
    """The fault table, the recovery medians by kind, and the audit's counts."""
    a = report["audit"]
    lines = [
        "",
        f"Run {report['run_id']}: {report['orders']} orders at {report['rate']:g}/s, "
        f"{report['instances']} instance(s) per stage, {report['elapsed_s']:.0f} s",
        "",
        "| at (s) | fault | back (s) | flow (s) |",
        "|---:|---|---:|---:|",
    ]
    for f in report["faults"]:
        note = f" ({f['error']})" if f["error"] else ""
        lines.append(
            f"| {f['at_s']:.1f} | {f['fault']}{note} | {_seconds(f['back_s'])} | {_seconds(f['flow_s'])} |"
        )
    lines += [
        "",
        "back: until what was hit answered again (a stage: every input partition owned by a live instance);",
        "flow: until an order placed after the fault had its first work order released.",
        "",
        "| recovery by fault kind | faults | median back (s) | max back (s) | median flow (s)"
        " | max flow (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind, rows in recovery_by_kind(report["faults"]).items():
        lines.append(
            f"| {kind} | {rows['count']} | {_seconds(rows['back_median'])} | {_seconds(rows['back_max'])} "
            f"| {_seconds(rows['flow_median'])} | {_seconds(rows['flow_max'])} |"
        )
    lines += [
        "",
        "| check | count |",
        "|---|---:|",
        f"| orders placed | {a['orders']} |",
        f"| orders lost | {a['lost_orders']} |",
        f"| orders neither finished nor visibly waiting | {a['unsettled_orders']} |",
        f"| work orders released | {a['work_orders']} |",
        f"| duplicate work orders | {a['duplicate_work_orders']} |",
        f"| status transitions | {a['status_transitions']} |",
        f"| duplicate status transitions | {a['duplicate_transitions']} |",
        f"| ledger rows | {a['ledger_rows']} |",
        f"| ledger rows disagreeing with their reservations | {a['ledger_mismatches']} |",
        f"| oversold units | {a['oversold_units']} |",
        f"| units a node found missing, still reserved to the short-picked order | "
        f"{a['missing_units_still_reserved']} |",
        f"| work-order lines without a reservation | {a['unreserved_work_order_lines']} |",
        f"| reservations still held by shipments that left | {a['shipped_still_reserved']} "
        f"of {a['lines_shipped']} lines shipped |",
        f"| order lines shipped in more units than ordered | {a['shipped_beyond_order']} |",
        "| the same, by a node that shipped work it was asked to cancel (known race) |"
        f" {a.get('shipped_beyond_order_after_cancel', 0)} |",
        f"| exceptions (resolved / in review / open) | {_exceptions(a['exceptions'])} |",
        f"| returns authorised | {a['returns']} |",
        f"| returns lost | {a['lost_returns']} |",
        f"| returns neither finished nor visibly waiting | {a['unsettled_returns']} |",
        f"| duplicate return status transitions | {a['duplicate_return_transitions']} |",
        f"| duplicate return work orders | {a['duplicate_return_work_orders']} |",
        f"| returns restocked twice | {a['duplicate_restocks']} of {a['restocks']} restocks |",
        f"| dead letters | {sum(a['dead_letters'].values())} |",
        "",
        "final states: " + ", ".join(f"{k} {v}" for k, v in sorted(a["final_states"].items())),
        "returns' final states: "
        + ", ".join(f"{k} {v}" for k, v in sorted(a["return_final_states"].items())),
    ]
    if a["dead_letter_reasons"]:
        lines.append("dead letters: " + "; ".join(a["dead_letter_reasons"][:5]))
    lines.append("")
    lines.append("ALL GUARANTEES HELD" if not a["problems"] else "PROBLEMS:\n  " + "\n  ".join(a["problems"]))
    lines.append(f"logs: {report['logs']}")
    return "\n".join(lines)


def _exceptions(counts: dict[str, int]) -> str:
    return f"{counts.get('resolved', 0)} / {counts.get('in_review', 0)} / {counts.get('open', 0)}"


_KIND_WORDS = {
    ("kill_stage", True): "stage process killed, restarted",
    ("kill_stage", False): "stage process killed for good",
    ("restart_broker", True): "broker restarted",
    ("crash_broker", True): "broker crashed, restarted",
    ("crash_database", True): "PostgreSQL crashed, restarted",
    ("close_node", True): "node closed",
    ("reopen_node", True): "node reopened",
}


def recovery_by_kind(faults: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Medians and maxima of the recovery times, per kind of fault."""
    import statistics

    groups: dict[str, list[dict[str, Any]]] = {}
    for f in faults:
        groups.setdefault(_KIND_WORDS.get((f["kind"], f["restart"]), f["kind"]), []).append(f)

    def med(values: list[float]) -> float | None:
        return round(statistics.median(values), 2) if values else None

    out: dict[str, dict[str, Any]] = {}
    for kind, rows in groups.items():
        back = [r["back_s"] for r in rows if r["back_s"] is not None]
        flow = [r["flow_s"] for r in rows if r["flow_s"] is not None]
        out[kind] = {
            "count": len(rows),
            "back_median": med(back),
            "back_max": max(back) if back else None,
            "flow_median": med(flow),
            "flow_max": max(flow) if flow else None,
        }
    return out


__all__ = ["add_faults_parser", "cmd_faults", "recovery_by_kind", "report_text"]
