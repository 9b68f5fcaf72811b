"""`make bench` still runs: the ceiling benchmark at its smallest, on the suite's broker.

Only that it completes and reports something is checked; its numbers depend on
the machine and are for people to read, not for a test to judge.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bench import ceiling

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
