"""`make bench`'s end-to-end run still runs and reports: every stage, the simulated nodes and carriers,
the latency phases, the ceiling, memory and decision quality, at the smallest sizes, on a Kafka and a
PostgreSQL of its own (or the ones KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL name).

Only that it completes and that each part of the report has numbers is checked: how fast is for people
to read in the benchmark's output, not for a test to judge on a shared machine.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from bench import pipeline
from orchestrator.stages import ORDER_STAGES


async def test_the_end_to_end_benchmark_runs_and_reports_every_part(tmp_path: Path) -> None:
    # Its own thread: the benchmark runs its own event loops, apart from the suite's.
    code = await asyncio.to_thread(pipeline.main, ["--quick", "--out", str(tmp_path)])
    assert code == 0
    result = json.loads((tmp_path / "pipeline.json").read_text())
    run = result["pipeline"]

    assert run["maximum"]["released"] > 0 and run["maximum"]["released_per_s"] > 0
    assert [row["fraction"] for row in run["latency"]] == list(pipeline.QUICK.load_fractions)
    for row in run["latency"]:
        assert row["released"] > 0 and row["p50_ms"] is not None and row["p99_ms"] >= row["p50_ms"], row
        # Which stages the paced orders waited behind: every order stage handled some of them.
        paced_stages = {r["stage"]: r for r in row["stages"]}
        assert set(ORDER_STAGES) <= set(paced_stages), paced_stages
        assert all((r["slow_batches"] or 0) >= 0 for r in row["stages"]), row["stages"]
        # Where a batch's time went: the phases account for most of it and no more than all of it.
        timed = [r for r in row["stages"] if r["commit_ms"] is not None]
        assert timed, row["stages"]
        for r in timed:
            phases = sum(r[f"{phase}_phase_ms"] for phase in ("handle", "produce", "offsets", "commit"))
            assert 0 < phases <= r["commit_ms"] + 0.5, r
    assert run["orders_delivered"] > 0, "the simulated nodes and carriers delivered nothing"
    stages = {r["stage"] for r in run["maximum"]["stages"]}
    assert set(ORDER_STAGES) <= stages | {"returns"}, stages
    rss = {r["process"].rsplit("-", 1)[0]: r["peak_rss_mib"] for r in run["memory"]}
    assert all((rss.get(stage) or 0) > 0 for stage in ORDER_STAGES), rss

    ceiling = result["ceiling"]
    assert ceiling["hops"] == pipeline.HOPS and ceiling["events_per_s"] > 0 and ceiling["duplicates"] == 0
    assert result["ceiling_ratio"] > 0

    quality = result["decision_quality"]
    assert quality["rows"] and all(r["optimum"] is not None for r in quality["rows"])
    # No policy beats the optimum, so its distance below closest-node bounds the policy's.
    assert quality["optimum_below_closest"] >= quality["below_closest"] - 0.001, quality

    report = (tmp_path / "pipeline.md").read_text()
    assert "pipeline ÷ ceiling" in report and "Decision quality" in report
    assert "Batches per stage at 50% of the maximum" in report and "the optimum itself" in report
    assert (tmp_path / "pipeline.png").stat().st_size > 10_000
