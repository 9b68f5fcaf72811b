"""`make bench` still runs: the ceiling benchmark at its smallest, on the suite's broker, and the
decision benchmark with its comparison of the compiled and the pure Python core.

Only that it completes and reports something is checked; its numbers depend on
the machine and are for people to read, not for a test to judge.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bench import ceiling, decision
from orchestrator.native import decision_core

pytestmark = pytest.mark.integration


async def test_the_ceiling_benchmark_runs_and_reports(bootstrap: str, tmp_path: Path) -> None:
    out = tmp_path / "ceiling.json"
    argv = ["--quick", "--bootstrap", bootstrap, "--out", str(out), "--paced-seconds", "2"]
    # Its own thread: the benchmark runs its own event loops, apart from the suite's.
    code = await asyncio.to_thread(ceiling.main, argv)
    assert code == 0
    result = json.loads(out.read_text())
    assert result["events_per_s"] > 0
    assert result["paced"]["delivered"] == result["paced"]["events"]
    assert result["duplicates"] == 0
    assert len(result["relays"]) == result["hops"]


def test_the_decision_benchmark_runs_and_compares_the_cores(tmp_path: Path) -> None:
    out = tmp_path / "decision.json"
    # Without freezing the heap: that would freeze the suite's own objects too.
    assert decision.main(["--quick", "--no-gc-freeze", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["decisions"] == 200 and result["p99_ms"] >= result["p50_ms"] > 0
    cores = result["cores"]
    assert cores["core"] == ("compiled" if decision_core() == "compiled" else "pure")
    if cores["core"] == "compiled":
        # Both cores timed on the same orders, and not one plan differs between them.
        assert cores["compiled_decisions_per_s"] > 0 and cores["pure_decisions_per_s"] > 0
        assert cores["plans_compared"] == 200 and cores["plans_differing"] == 0
