"""The live terminal view of `make run` and the summary at its end."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from orchestrator.sim.live.tally import DECISION_KINDS

STAGE_ORDER = (
    "ingest",
    "validate",
    "decide-node",
    "reserve",
    "release",
    "monitor",
    "exceptions",
    "status-sync",
    "returns",
)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(counts.items()) if v) or "none"


def _returns(returns: dict[str, Any]) -> str:
    if not returns["authorised"]:
        return "none"
    return f"{returns['authorised']} authorised; now {_counts(returns['states'])}"


def live_table(snapshot: dict[str, Any]) -> Group:
    """One frame: throughput, lag, decisions, exceptions and latency."""
    s = snapshot["summary"]
    head = Text.assemble(
        ("orchestrator live  ", "bold"),
        f"{snapshot['elapsed_s']:.0f}s  ",
        f"orders placed {s['orders'].get('created', 0)}  ",
        f"received {snapshot['received_per_s']:.1f}/s  released {snapshot['released_per_s']:.1f}/s",
        ("  FLASH SALE" if snapshot.get("flash_sale") else "", "bold red"),
    )
    lag = snapshot.get("lag")
    lag_table = Table(title="lag (messages waiting)", title_justify="left", show_header=True, box=None)
    for stage in STAGE_ORDER:
        lag_table.add_column(stage, justify="right")
    lag_table.add_row(*(str(lag.get(stage, 0)) if lag is not None else "?" for stage in STAGE_ORDER))
    body = Table(show_header=False, box=None, pad_edge=False)
    body.add_column(style="bold", no_wrap=True)
    body.add_column()
    body.add_row("decisions", _counts({k: s["decisions"][k] for k in DECISION_KINDS}))
    body.add_row("work orders", _counts(s["work_orders"]))
    body.add_row("nodes said", _counts(s["node_events"]))
    body.add_row("carriers said", _counts(s["carrier_events"]))
    body.add_row("exceptions", _counts(s["exceptions"]))
    resolutions = snapshot.get("resolutions") or {}
    body.add_row(
        "resolved by",
        "; ".join(f"{kind}: {_counts(ends)}" for kind, ends in sorted(resolutions.items())) or "none",
    )
    body.add_row("order states", _counts(s["final_states"]))
    body.add_row("returns", _returns(s["returns"]))
    latency = s["latency_ms"]
    body.add_row(
        "order → work order",
        f"p50 {_ms(latency['p50'])}  p99 {_ms(latency['p99'])}  over {latency['orders']} orders",
    )
    body.add_row("dead letters", _counts(s["dead_letters"]))
    return Group(head, lag_table, body)


def progress_line(snapshot: dict[str, Any]) -> str:
    """The same frame as one line, for logs and terminals that are not interactive."""
    s = snapshot["summary"]
    latency = s["latency_ms"]
    lag = snapshot.get("lag")
    waiting = "?" if lag is None else str(sum(lag.values()))
    return (
        f"[{snapshot['elapsed_s']:5.0f}s] placed {s['orders'].get('created', 0)}"
        f" released-orders {latency['orders']} received {snapshot['received_per_s']:.1f}/s"
        f" released {snapshot['released_per_s']:.1f}/s lag {waiting}"
        f" exceptions {sum(s['exceptions'].values())} p50 {_ms(latency['p50'])} p99 {_ms(latency['p99'])}"
    )


def summary_text(report: dict[str, Any]) -> str:
    """The end-of-run summary, in words and small tables."""
    s = report["summary"]
    latency = s["latency_ms"]
    lines = [
        "",
        f"Run {report['run_id']}: {report['elapsed_s']:.0f} s, "
        f"{s['orders'].get('created', 0)} orders placed "
        f"({s['orders'].get('amended', 0)} amended, {s['orders'].get('cancelled', 0)} cancelled, "
        f"{s['orders'].get('hold_released', 0)} holds released)",
        "",
        "Decisions (first plan of each order)",
    ]
    lines += [f"  {k.replace('_', ' '):<16} {s['decisions'][k]:>6}" for k in DECISION_KINDS]
    lines += [
        f"  repairs planned  {s['repairs_planned']:>6}",
        "",
        f"Work orders released {s['work_orders'].get('released', 0)}, "
        f"cancel requests {s['work_orders'].get('cancel_requested', 0)}",
        f"Nodes said:    {_counts(s['node_events'])}",
        f"Carriers said: {_counts(s['carrier_events'])}",
        "",
        "Exceptions and how they ended",
    ]
    resolutions = report.get("resolutions") or {}
    for kind, raised in sorted(s["exceptions"].items()):
        lines.append(f"  {kind:<22} {raised:>5}   {_counts(resolutions.get(kind, {}))}")
    if not s["exceptions"]:
        lines.append("  none")
    lines += [
        "",
        f"Orders by state now: {_counts(s['final_states'])}",
        f"Returns: {_returns(s['returns'])}",
        f"Order placed → first work order released: p50 {_ms(latency['p50'])}, p99 {_ms(latency['p99'])}"
        f" ({latency['orders']} orders)",
        f"Dead letters: {_counts(s['dead_letters'])}",
        *(f"  {reason}" for reason in s.get("dead_letter_reasons", [])[:5]),
    ]
    return "\n".join(lines)


__all__ = ["live_table", "progress_line", "summary_text"]
