"""The README's integration guide works as written: its shell blocks, run in order with `kcat` and
`jq` against the real broker while every stage runs, add a node, a carrier service and stock, place
an order, take the work order and report it shipped, report the delivery, and read the order's story
from `oms.status.v1`, which must end delivered."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.harness import Pipeline, pipeline

pytestmark = pytest.mark.integration
__all__ = ["pipeline"]

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Integration guide: connecting an OMS, nodes and carriers"


def guide_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    return re.findall(r"```sh\n(.*?)```", text[start:end], flags=re.DOTALL)


def test_the_guide_has_every_step() -> None:
    script = "\n".join(guide_blocks())
    for topic in ("network.updates.v1", "inventory.updates.v1", "oms.orders.v1", "wms.work-orders.v1",
                  "wms.events.v1", "carrier.events.v1", "oms.status.v1"):  # fmt: skip
        assert topic in script, f"the guide never shows {topic}"


async def test_the_guide_runs_as_written_and_the_order_is_delivered(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    for tool in ("kcat", "jq"):
        assert shutil.which(tool), f"{tool} is missing: `make test` installs it (.ci/install-debian-tools)"
    blocks = guide_blocks()
    # The first block points KAFKA at a local broker: the test's broker replaces it.
    script = "set -euo pipefail\n" + "\n".join(blocks).replace("export KAFKA=127.0.0.1:9092", "")
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", script,
        cwd=tmp_path, env={**os.environ, "KAFKA": pipeline.bootstrap},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 240)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-3000:]
    story = [line.split()[1] for line in text.splitlines() if re.fullmatch(r"\d+ \w+", line)]
    assert story[0] == "received" and story[-1] == "delivered", text
    assert story.index("released") < story.index("shipped") < story.index("delivered"), story
    # The harness's own reader of oms.status.v1 agrees with what the guide's kcat printed.
    await pipeline.out.final_state("ORD-GUIDE-1", "delivered")
    assert pipeline.out.states("ORD-GUIDE-1") == story
    print(text)
