"""How a stock count or delta changes a node's on-hand position: one rule for every ledger.

reserve's ledger in PostgreSQL and the promise service's ledger in memory
both fold `inventory.updates.v1` by these rules, so they cannot drift apart:
- a snapshot replaces on-hand and safety stock, unless the position holds a
  later count (by `as_of`): a late or resent count would put back stock
  that has since moved;
- a delta moves on-hand, never below zero (a removal of stock the ledger
  never saw);
- a shipment the orchestrator reserved for leaves on-hand when the node
  reports it shipped (`consume`), unless the position's count was taken
  after it left (the count has it off already). Nodes therefore report only
  the stock moves the orchestrator did not order: receipts, damage,
  adjustments, counts;
- a count does not see shipments that left after it was taken: those (the
  position's shipment log) come off the counted on-hand.
What is reserved is never touched by counts or deltas.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from orchestrator.contract.inventory import InventoryDelta, InventorySnapshot

StockChange = InventorySnapshot | InventoryDelta
#: Units that left a position with a shipment, and when: (shipped_at, units), kept from the position's
#: last count on, for a count taken before them that comes in after them.
Shipped = tuple[datetime, int]
#: The largest value of a PostgreSQL `integer` (the ledger's columns).
INT4_MAX = 2**31 - 1


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


def apply_change(position: OnHandPosition, change: StockChange, shipped: Sequence[Shipped] = ()) -> None:
    """Fold one snapshot or delta into `position`, in place; `shipped` is the position's shipment log."""
    if isinstance(change, InventoryDelta):
        position.on_hand = max(0, position.on_hand + change.change)
    elif position.counted_at is None or position.counted_at <= change.as_of:
        left_since = sum(units for at, units in shipped if at > change.as_of)
        position.on_hand, position.safety_stock = max(0, change.on_hand - left_since), change.safety_stock
        position.counted_at = change.as_of


def consume(position: OnHandPosition, units: int, shipped_at: datetime) -> bool:
    """Take `units` a shipment took away at `shipped_at` off on-hand, in place, unless the position's
    count was taken after that (it counted them gone). True when the shipment is newer than the
    count: the position's shipment log must keep it, for a count taken before it that comes later."""
    if position.counted_at is not None and shipped_at <= position.counted_at:
        return False
    position.on_hand = max(0, position.on_hand - units)
    return True


def still_to_count(shipped: Iterable[Shipped], counted_at: datetime | None) -> list[Shipped]:
    """The part of a shipment log a count at `counted_at` has not seen (what the log keeps)."""
    return [entry for entry in shipped if counted_at is None or entry[0] > counted_at]


def _fits(change: StockChange, trial: Counted, limit: int) -> bool:
    """Whether a 32-bit ledger holds the change's numbers and the position it makes (-limit-1..limit)."""
    low = -limit - 1
    if isinstance(change, InventoryDelta):
        given = low <= change.change <= limit
    else:
        given = low <= change.on_hand <= limit and low <= change.safety_stock <= limit
    return given and low <= trial.on_hand <= limit and low <= trial.safety_stock <= limit


def apply_storable(
    position: OnHandPosition, change: StockChange, shipped: Sequence[Shipped] = (), limit: int = INT4_MAX
) -> bool:
    """Fold `change` into `position` unless a 32-bit ledger refuses it (see `fold_changes`): reserve
    dead-letters such a change, so every ledger must leave it out. True when applied."""
    if isinstance(change, InventoryDelta):
        # Deltas are nearly every change a ledger folds: the same rule without the trial position.
        on_hand = max(0, position.on_hand + change.change)
        low = -limit - 1
        if not (low <= change.change <= limit and on_hand <= limit and low <= position.safety_stock <= limit):
            return False
        position.on_hand = on_hand
        return True
    trial = Counted(position.on_hand, position.safety_stock, position.counted_at)
    apply_change(trial, change, shipped)
    if not _fits(change, trial, limit):
        return False
    position.on_hand, position.safety_stock, position.counted_at = (
        trial.on_hand,
        trial.safety_stock,
        trial.counted_at,
    )
    return True


def fold_changes(
    positions: Mapping[tuple[str, str], Counted],
    changes: Iterable[StockChange],
    *,
    limit: int | None = None,
    shipped: Mapping[tuple[str, str], Sequence[Shipped]] | None = None,
) -> tuple[dict[tuple[str, str], Counted], list[int]]:
    """The positions `changes` touch after all of them, in order, from `positions` (missing: empty),
    and the indexes of the changes folded in. `shipped` holds the positions' shipment logs.

    With `limit`, a change whose numbers, or the position it would make, exceed it is left out, as
    if it had failed on its own: a ledger of 32-bit columns refuses it when applying it alone, and
    the events after it apply to the position without it.
    """
    out: dict[tuple[str, str], Counted] = {}
    folded: list[int] = []
    for i, change in enumerate(changes):
        key = (change.node_id, change.sku)
        current = out.get(key) or positions.get(key) or Counted()
        trial = Counted(current.on_hand, current.safety_stock, current.counted_at)
        apply_change(trial, change, shipped.get(key, ()) if shipped else ())
        if limit is not None and not _fits(change, trial, limit):
            continue
        out[key] = trial
        folded.append(i)
    return out, folded


__all__ = [
    "INT4_MAX",
    "Counted",
    "OnHandPosition",
    "Shipped",
    "StockChange",
    "apply_change",
    "apply_storable",
    "consume",
    "fold_changes",
    "still_to_count",
]
