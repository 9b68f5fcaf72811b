"""How a stock count or delta changes a node's on-hand position: one rule for every ledger.

reserve's ledger in PostgreSQL and the promise service's ledger in memory
both fold `inventory.updates.v1` by these rules, so they cannot drift apart:
- a snapshot replaces on-hand and safety stock, unless the position holds a
  later count (by `as_of`): a late or resent count would put back stock
  that has since moved;
- a delta moves on-hand, never below zero (a removal of stock the ledger
  never saw).
What is reserved is never touched by either.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from orchestrator.contract.inventory import InventoryDelta, InventorySnapshot

StockChange = InventorySnapshot | InventoryDelta


class OnHandPosition(Protocol):
    on_hand: int
    safety_stock: int
    counted_at: datetime | None


@dataclass(slots=True)
class Counted:
    """On-hand, safety stock and the time of the last count of one (node, SKU)."""

    on_hand: int = 0
    safety_stock: int = 0
    counted_at: datetime | None = None


def apply_change(position: OnHandPosition, change: StockChange) -> None:
    """Fold one snapshot or delta into `position`, in place."""
    if isinstance(change, InventoryDelta):
        position.on_hand = max(0, position.on_hand + change.change)
    elif position.counted_at is None or position.counted_at <= change.as_of:
        position.on_hand, position.safety_stock = change.on_hand, change.safety_stock
        position.counted_at = change.as_of


def fold_changes(
    positions: Mapping[tuple[str, str], Counted], changes: Iterable[StockChange]
) -> dict[tuple[str, str], Counted]:
    """The positions `changes` touch after all of them, in order, from `positions` (missing: empty)."""
    out: dict[tuple[str, str], Counted] = {}
    for change in changes:
        key = (change.node_id, change.sku)
        position = out.get(key)
        if position is None:
            before = positions.get(key)
            position = out[key] = (
                Counted()
                if before is None
                else Counted(before.on_hand, before.safety_stock, before.counted_at)
            )
        apply_change(position, change)
    return out


__all__ = ["Counted", "OnHandPosition", "StockChange", "apply_change", "fold_changes"]
