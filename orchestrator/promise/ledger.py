"""The promise service's copy of the ledger: what each node can promise per SKU, in memory.

Folded from the same events reserve folds, so it needs no database read per
request: stock counts and deltas from `inventory.updates.v1` (by the rules
reserve applies, `orchestrator.domain.stock_counts`), and what
reserve took and gave back from `orchestrator.reservations.v1`. It may be a
moment behind reserve; that is fine for the same reason it is fine for
decide-node: reserve's conditional update is the atomic check, and a promise
reserves nothing.

A shipment that leaves its node consumes its reservation
(`reservation.consumed.v1`): the units leave reserved and on-hand here as
they do in reserve's ledger, by the same rule and with the same shipment log;
what it held and did not take is given back.

What the waiting lines (back-orders, pre-orders) of each SKU are owed comes
from `orchestrator.queues.v1`: like decide-node, a promise is made from the
stock less that (`set_aside`), so it does not offer units a waiting order is
owed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime

from orchestrator.contract.base import EventPayload
from orchestrator.contract.inventory import InventoryDelta, InventorySnapshot
from orchestrator.contract.pipeline import (
    QueueOwed,
    ReservationConfirmed,
    ReservationsConsumed,
    ReservationsReleased,
)
from orchestrator.domain.network import NetworkView
from orchestrator.domain.stock_counts import Shipped, apply_storable, consume, still_to_count
from orchestrator.domain.supply import set_aside

StockKey = tuple[str, str]  # (node_id, sku)


@dataclass(slots=True)
class _Position:
    on_hand: int = 0
    safety_stock: int = 0
    reserved: int = 0
    counted_at: datetime | None = None
    #: Shipments since the last count (see `orchestrator.domain.stock_counts`); None while there are none.
    shipped: list[Shipped] | None = None

    @property
    def available(self) -> int:
        return max(0, self.on_hand - self.reserved - self.safety_stock)


@dataclass(frozen=True, slots=True)
class _Held:
    """Units one shipment line holds at a node."""

    shipment_id: str
    line_id: str
    key: StockKey
    quantity: int


@dataclass(slots=True)
class PromiseLedger:
    """Stock positions per (node, SKU), the reservations per order, and shipments planned per node and day."""

    positions: dict[StockKey, _Position] = field(default_factory=dict)
    held: dict[str, list[_Held]] = field(default_factory=dict)
    by_sku: dict[str, set[str]] = field(default_factory=dict)
    #: Shipments reserved per (node, ship date), and the day each unshipped shipment counts on.
    load: dict[tuple[str, date], int] = field(default_factory=dict)
    slots: dict[str, tuple[str, date]] = field(default_factory=dict)
    #: Units the waiting lines of each SKU are owed (SKUs nothing waits for are absent).
    owed: dict[str, int] = field(default_factory=dict)
    #: Shipments reserve gave back by name (an undone repair's): their confirmation may come later,
    #: from another of reserve's partitions, and must then hold nothing. Rare, so kept for good.
    given_back: set[str] = field(default_factory=set)
    applied: int = 0

    def _position(self, node_id: str, sku: str) -> _Position:
        key = (node_id, sku)
        pos = self.positions.get(key)
        if pos is None:
            pos = self.positions[key] = _Position()
            self.by_sku.setdefault(sku, set()).add(node_id)
        return pos

    def apply(self, event: EventPayload, at: datetime) -> None:
        """Fold one event; `at` is when it happened (a confirmation's day counts toward node load)."""
        if isinstance(event, (InventoryDelta, InventorySnapshot)):
            key = (event.node_id, event.sku)
            known = self.positions.get(key)
            position = _Position() if known is None else known
            if not apply_storable(position, event, position.shipped or ()):
                return  # reserve's ledger refuses it too (it is dead-lettered there)
            if position.shipped:
                position.shipped = still_to_count(position.shipped, position.counted_at) or None
            if known is None:
                self.positions[key] = position
                self.by_sku.setdefault(event.sku, set()).add(event.node_id)
        elif isinstance(event, ReservationConfirmed):
            self._confirmed(event, at)
        elif isinstance(event, ReservationsReleased):
            only = set(event.shipment_ids)
            self.given_back |= only
            self._give_back(event.order_id, lambda held: not only or held.shipment_id in only)
        elif isinstance(event, ReservationsConsumed):
            self._consumed(event)
        elif isinstance(event, QueueOwed):
            if event.units:
                self.owed[event.sku] = event.units
            else:
                self.owed.pop(event.sku, None)
        else:
            return
        self.applied += 1

    def _confirmed(self, event: ReservationConfirmed, at: datetime) -> None:
        repair = event.repair
        if repair is not None and repair.replaces_shipment_id is not None:
            # reserve gives back what the failing shipment held for the repaired lines first.
            replaced = repair.replaces_shipment_id
            wanted = {line.line_id: line.quantity for line in repair.lines}
            self._give_back(
                event.order_id,
                lambda held: held.shipment_id == replaced,
                None if repair.cancel_replaced else wanted,
            )
        holds = self.held.setdefault(event.order_id, [])
        for reserved in event.shipments:
            shipment = reserved.shipment
            if shipment.shipment_id in self.given_back:
                continue
            for line in shipment.lines:
                self._position(shipment.node_id, line.sku).reserved += line.quantity
                holds.append(
                    _Held(shipment.shipment_id, line.line_id, (shipment.node_id, line.sku), line.quantity)
                )
            key = self.slots[shipment.shipment_id] = (shipment.node_id, shipment.counts_on(at.date()))
            self.load[key] = self.load.get(key, 0) + 1

    def _consumed(self, event: ReservationsConsumed) -> None:
        """The shipment left: its lines' units are no longer held, nor on hand (unless counted gone);
        what it held and did not take is no longer held either."""
        # Consumed and given back alike leave `reserved`; only the consumed leave on-hand.
        off = {line.line_id: line.quantity for line in event.lines}
        for line in event.released:
            off[line.line_id] = off.get(line.line_id, 0) + line.quantity
        self.slots.pop(event.shipment_id, None)  # it shipped: its slot of the day was used
        self._give_back(event.order_id, lambda held: held.shipment_id == event.shipment_id, off)
        for line in event.lines:
            position = self._position(event.node_id, line.sku)
            if consume(position, line.quantity, event.shipped_at):
                position.shipped = [*(position.shipped or ()), (event.shipped_at, line.quantity)]

    def _give_back(
        self,
        order_id: str,
        which: Callable[[_Held], bool],
        wanted: dict[str, int] | None = None,
    ) -> None:
        holds = self.held.get(order_id)
        if not holds:
            return
        kept: list[_Held] = []
        touched: set[str] = set()
        for held in holds:
            if not which(held):
                kept.append(held)
                continue
            touched.add(held.shipment_id)
            back = held.quantity if wanted is None else min(held.quantity, wanted.get(held.line_id, 0))
            pos = self.positions[held.key]
            pos.reserved = max(0, pos.reserved - back)
            if back < held.quantity:
                kept.append(_Held(held.shipment_id, held.line_id, held.key, held.quantity - back))
        if kept:
            self.held[order_id] = kept
        else:
            del self.held[order_id]
        # A shipment given back whole before it shipped frees its slot of the day, as in reserve.
        for shipment_id in touched - {held.shipment_id for held in kept}:
            key = self.slots.pop(shipment_id, None)
            if key is not None and self.load.get(key, 0) > 0:
                self.load[key] -= 1

    def stock(self, skus: set[str] | frozenset[str]) -> dict[StockKey, int]:
        """Units each node can promise of `skus`: on hand less reserved and safety stock, less what
        the SKU's waiting lines are owed (taken where decide-node takes it, `set_aside`)."""
        out: dict[StockKey, int] = {}
        for sku in skus:
            for node_id in self.by_sku.get(sku, ()):
                out[(node_id, sku)] = self.positions[(node_id, sku)].available
        owed = {sku: self.owed[sku] for sku in skus if sku in self.owed}
        return set_aside(out, owed) if owed else out

    def node_load(self, network: NetworkView, at: datetime) -> dict[str, int]:
        """Shipments reserved per node on the day a shipment planned at `at` would leave it (what
        decide-node checks capacity against)."""
        return network.load_on_ship_dates(self.load, at)

    def available_by_node(self, sku: str) -> dict[str, int]:
        return {node_id: units for (node_id, _), units in sorted(self.stock({sku}).items())}


__all__ = ["PromiseLedger", "StockKey"]
