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

from orchestrator.contract.network import CarrierServiceUpserted
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


async def run_the_guide(pipeline: Pipeline, workdir: Path) -> tuple[int, list[str]]:
    """The guide's blocks in one shell, as a user would paste them: exit code and what it printed."""
    # The first block points KAFKA at a local broker: the test's broker replaces it. Each block is
    # announced on stderr, so a run that hangs says where.
    script = "set -euo pipefail\n" + "\n".join(
        f"echo '>> guide block {n}' >&2\n{block}" for n, block in enumerate(guide_blocks(), 1)
    ).replace("export KAFKA=127.0.0.1:9092", "")
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", script,
        cwd=workdir, env={**os.environ, "KAFKA": pipeline.bootstrap},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    lines: list[str] = []

    async def read_all() -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            lines.append(raw.decode(errors="replace").rstrip("\n"))

    try:
        await asyncio.wait_for(read_all(), 240)
    except TimeoutError:
        process.kill()
        await process.wait()
        out = pipeline.out
        raise AssertionError(
            "the guide did not finish in 240 s; the orchestrator told the OMS "
            f"{out.statuses.get('ORD-GUIDE-1')}, released {out.work_orders.get('ORD-GUIDE-1')}, raised "
            f"{out.exceptions.get('ORD-GUIDE-1')}; the guide printed:\n" + "\n".join(lines[-40:])
        ) from None
    return await process.wait(), lines


async def test_the_guide_runs_as_written_and_the_order_is_delivered(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    for tool in ("kcat", "jq"):
        assert shutil.which(tool), f"{tool} is missing: `make test` installs it (.ci/install-debian-tools)"
    try:
        returncode, lines = await run_the_guide(pipeline, tmp_path)
        text = "\n".join(lines)
        assert returncode == 0, text[-3000:]
        # What the guide set up is what the order used: its node and carrier service, not the harness's.
        network = pipeline.deps.network.state
        assert "DC-GUIDE-LEEDS" in network.nodes and "guide-48h" in network.services, text
        (work_order,) = pipeline.out.released("ORD-GUIDE-1")
        assert (work_order["node_id"], work_order["carrier"]["service_id"]) == ("DC-GUIDE-LEEDS", "guide-48h")
        story = [line.split()[1] for line in lines if re.fullmatch(r"\d+ \w+", line)]
        assert story[0] == "received" and story[-1] == "delivered", text
        assert "shipped" in story, story
        assert story.index("released") < story.index("shipped") < story.index("delivered"), story
        # The harness's own reader of oms.status.v1 agrees with what the guide's kcat printed.
        await pipeline.out.final_state("ORD-GUIDE-1", "delivered")
        assert pipeline.out.states("ORD-GUIDE-1") == story
        print(text)
    finally:
        # The guide's carrier service is cheaper than the harness's: left active on the shared network
        # topic, it would carry the parcels of every test module after this one.
        service = (tmp_path / "service.json").read_text() if (tmp_path / "service.json").exists() else None
        if service is not None:
            withdrawn = CarrierServiceUpserted.model_validate_json(service).model_copy(
                update={"active": False}
            )
            await pipeline.publish(withdrawn)
            await pipeline.out.wait(
                lambda: not pipeline.deps.network.state.services[withdrawn.service_id].active,
                "the guide's carrier service withdrawn in the network view",
            )
