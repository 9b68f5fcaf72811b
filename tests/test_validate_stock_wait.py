"""validate and a stock count published just before the order, on PostgreSQL through the stage's own
handler: a SKU whose first count reserve applies moments after the order arrives is known (the order
goes on to be planned); a SKU nobody counts is rejected as unknown after the wait, and the next order
for it straight away; a drop-ship line's SKU, never in the ledger, is not waited for."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
import structlog

from orchestrator.contract.envelope import Envelope
from orchestrator.contract.examples import example
from orchestrator.contract.orders import OrderCreated
from orchestrator.contract.pipeline import OrderChange, OrderIngested, OrderValidated, StageStatus
from orchestrator.runtime.stage import HandlerContext
from orchestrator.stages import order_path_deps
from orchestrator.stages.common import INGESTED, STATUS, VALIDATED
from orchestrator.stages.validate import STOCK_CATCH_UP_S, validate_stage

pytestmark = pytest.mark.integration

LOG = structlog.get_logger("tests.validate_stock_wait")
BASE = example("order.created.v1")
assert isinstance(BASE, OrderCreated)


def ingested(order_id: str, sku: str, vendor: str | None = None) -> OrderIngested:
    line = BASE.lines[0].model_copy(update={"sku": sku, "quantity": 1, "drop_ship_vendor_id": vendor})
    order = BASE.model_copy(update={"order_id": order_id, "lines": (line,)})
    return OrderIngested(order_id=order_id, sequence=1, change=OrderChange.CREATED, order=order)


async def test_an_order_waits_for_reserve_to_apply_its_skus_first_count(database_url: str) -> None:
    stage = validate_stage(order_path_deps())
    ns = f"VW-{uuid.uuid4().hex[:6]}"
    conn = await asyncpg.connect(database_url)
    other = await asyncpg.connect(database_url)

    async def judge(order_id: str, sku: str, vendor: str | None = None) -> tuple[str, list[str]]:
        event = Envelope.new(ingested(order_id, sku, vendor), source="test/validate")
        ctx = HandlerContext(
            stage="validate", topic=INGESTED, event=event, db=conn, now=datetime.now(UTC), log=LOG
        )
        async with conn.transaction():
            await stage.handler(event, ctx)
        told = [e.envelope.data for e in ctx.emitted if e.topic == STATUS]
        planned = [e.envelope.data for e in ctx.emitted if e.topic == VALIDATED]
        assert len(told) == 1 and isinstance(told[0], StageStatus)
        if planned:
            assert isinstance(planned[0], OrderValidated) and planned[0].action == "plan"
        return told[0].state.value, [r.code for r in told[0].reasons]

    async def count_arrives(sku: str, after_s: float) -> None:
        # What reserve's handler writes for a first count, committed by another connection meanwhile.
        await asyncio.sleep(after_s)
        await other.execute(
            "INSERT INTO reserve_ledger (node_id, sku, on_hand, safety_stock) VALUES ($1, $2, 5, 0)",
            f"{ns}-DC",
            sku,
        )

    try:
        # A drop-ship line's SKU is its vendor's: the ledger never has it, and nothing waits for it.
        started = time.monotonic()
        state, reasons = await judge(f"{ns}-0", f"{ns}-VENDOR-ONLY", vendor=f"{ns}-VENDOR")
        assert "unknown_sku" not in reasons, (state, reasons)
        assert time.monotonic() - started < STOCK_CATCH_UP_S / 2, "waited for a SKU no ledger keeps"

        late = asyncio.create_task(count_arrives(f"{ns}-KETTLE", 0.5))
        state, reasons = await judge(f"{ns}-1", f"{ns}-KETTLE")
        await late
        assert "unknown_sku" not in reasons, (state, reasons)

        started = time.monotonic()
        state, reasons = await judge(f"{ns}-2", f"{ns}-NOBODY-STOCKS")
        waited = time.monotonic() - started
        # (The test's network is empty: the postal code is unroutable too; only the SKU matters here.)
        assert state == "rejected" and "unknown_sku" in reasons, reasons
        assert waited >= STOCK_CATCH_UP_S * 0.9, f"rejected after {waited:.2f} s, without waiting"

        # Right after a wait that found nothing, the next such order is not held up again.
        started = time.monotonic()
        state, reasons = await judge(f"{ns}-3", f"{ns}-NOBODY-STOCKS")
        assert state == "rejected" and "unknown_sku" in reasons, reasons
        assert time.monotonic() - started < STOCK_CATCH_UP_S / 2
    finally:
        await conn.close()
        await other.close()
