"""`make bench`'s promise run still runs and reports: the quote alone, the HTTP API at its maximum
and at half of it, inventory deltas into the promise view and reserve's ledger with nothing else
running and then while the order path runs, and a new view's catch-up, at the smallest sizes, on a
Kafka and a PostgreSQL of its own.

Only that it completes and that each part has numbers is checked; how fast is for people to read.
It runs as a child process because the benchmark pins itself and the server to one core each.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from orchestrator.native import decision_core

REPO = Path(__file__).resolve().parents[1]


async def test_the_promise_benchmark_runs_and_reports_every_part(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.promise", "--quick", "--out", str(tmp_path),
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 480)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-4000:]
    result = json.loads((tmp_path / "promise.json").read_text())

    assert result["nodes"] == 50
    engine = result["engine"]
    assert engine["quotes"] > 0 and engine["quotes_per_s"] > 0 and engine["p99_ms"] >= engine["p50_ms"]
    http = result["served"]["http"]
    # The server and the benchmark run the core this checkout has (compiled when built and current).
    assert http["decision_core"] == decision_core()
    assert engine["decision_core"] == ("compiled" if decision_core() == "compiled" else "pure")
    if engine["decision_core"] == "compiled":
        assert engine["pure_quotes_per_s"] > 0 and engine["speedup"] > 0
    for phase in (http["maximum"], http["half"]):
        assert phase["requests"] > 0 and phase["errors"] == 0, phase
        assert phase["p99_ms"] >= phase["p50_ms"] > 0, phase
    # The ledgers alone first: reserve the only stage, no orders.
    alone = result["served"]["alone"]
    assert alone["deltas"] == 2_000 and alone["warm_up_deltas"] == 500, alone
    assert alone["promise_view_per_s"] and alone["reserve_ledger_per_s"], alone
    assert alone["reserve_cpu_us_per_delta"] > 0 and alone["reserve_cores"] > 0, alone
    deltas = result["served"]["deltas"]
    assert deltas["promise_view_per_s"] and deltas["reserve_ledger_per_s"], deltas
    # The untimed warm-up's deltas went in before the timed ones, and a new view reads both.
    assert deltas["warm_up"]["deltas"] > 0, deltas["warm_up"]
    assert deltas["catch_up"]["events"] >= deltas["deltas"] + deltas["warm_up"]["deltas"], deltas["catch_up"]
    # Where the CPU went while the ledgers took the deltas: the processes that did the work are named.
    groups = {row["group"]: row for row in deltas["cpu"]}
    for busy in ("stage reserve", "promise API", "Kafka broker", "PostgreSQL", "benchmark (OMS, reader)"):
        assert groups[busy]["cpu_seconds"] > 0, groups
    assert sum(float(row["share"]) for row in deltas["cpu"]) <= 1.05, deltas["cpu"]

    report = (tmp_path / "promise.md").read_text()
    assert "promise requests/s over HTTP, one core" in report and "reserve's ledger" in report
    assert "| stage reserve |" in report
    assert "deltas/s into reserve's ledger, nothing else running" in report
    assert "Nothing else running: 2,000 deltas after a warm-up of 500" in report
    assert "after a warm-up of 1,000 deltas" in report
