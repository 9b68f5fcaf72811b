"""The fulfilment network as decide-node sees it: nodes, their capacity, carrier services, outages.

The view is rebuilt by folding `network.updates.v1` events into it. It is an
immutable value: `apply` returns a new view, so a decision in progress never
sees the network change under it, and a stage can swap its view atomically.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from types import MappingProxyType
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from orchestrator.contract.base import EventPayload
from orchestrator.contract.common import NodeKind, Weekday
from orchestrator.contract.network import (
    CarrierOutage,
    CarrierServiceUpserted,
    NodeCapacityChanged,
    NodeStatusChanged,
    NodeUpserted,
)

K = TypeVar("K")
V = TypeVar("V")


def _empty() -> Mapping[Any, Any]:
    return MappingProxyType({})


def _with(mapping: Mapping[K, V], key: K, value: V) -> Mapping[K, V]:
    """A read-only copy of `mapping` with `key` set: views share nothing mutable."""
    updated = dict(mapping)
    updated[key] = value
    return MappingProxyType(updated)


#: How far past its first possible day a ship date is looked for: a calendar that closes a node for
#: longer should close the node (`network.node_status_changed`), and decide-node reads the load of
#: only so many days ahead (`orchestrator.stages.decide_reads.around`).
SHIP_DAY_SEARCH_DAYS = 14


#: Monday to Friday, as `date.weekday()` numbers them: a warehouse's week, and a carrier's.
WEEKDAYS = frozenset(range(5))
EVERY_DAY = frozenset(range(7))


@lru_cache(maxsize=128)
def _week(days: tuple[Weekday, ...]) -> frozenset[int]:
    """`date.weekday()` numbers of `days`: made once per distinct week, not once per node a decision
    looks at (a network has a handful of weeks)."""
    return frozenset(day.number for day in days)


def node_week(node: NodeUpserted) -> frozenset[int]:
    """The days of the week `node` hands goods over (`date.weekday()` numbers): its `working_days`,
    else every day for a store and Monday to Friday for the others."""
    if node.working_days is not None:
        return _week(node.working_days)
    return EVERY_DAY if node.kind is NodeKind.STORE else WEEKDAYS


def service_week(service: CarrierServiceUpserted) -> frozenset[int]:
    """The days of the week a carrier service's transit days count: its `working_days`, else
    Monday to Friday."""
    return WEEKDAYS if service.working_days is None else _week(service.working_days)


def ship_day(node: NodeUpserted, at: datetime) -> tuple[date, datetime]:
    """(ship date, ship-by in UTC) of `node` at `at`: today before its cut-off, else
    its next working day, as `cutoff_local` says. A store trades every day; a warehouse, 3PL or
    vendor hands goods to carriers Monday to Friday (the days transit times count), so after its
    Friday cut-off or at the weekend its next working day is Monday; `working_days` says
    otherwise. Its `non_working_days` (holidays) are skipped too, for at most
    `SHIP_DAY_SEARCH_DAYS`. The node's capacity is counted on the ship date: what it can ship
    that day."""
    cutoff = node.cutoff_local
    local = at.astimezone(ZoneInfo(node.timezone))
    today = local.date()
    ship_date = today if local.time() < cutoff else today + timedelta(days=1)
    week = node_week(node)
    holidays = node.non_working_days
    for _ in range(SHIP_DAY_SEARCH_DAYS):
        # Counted from a weekend day instead, a next-day parcel was promised for Monday and
        # arrived on Tuesday; counted from a bank holiday, a day early.
        if ship_date.weekday() not in week or (holidays and ship_date in holidays):
            ship_date += timedelta(days=1)
        else:
            break
    ship_by = datetime.combine(ship_date, cutoff, tzinfo=local.tzinfo).astimezone(UTC)
    return ship_date, ship_by


#: What a node's ship date depends on besides the moment: its zone, cut-off, working days of the
#: week, and holidays.
ShipClock = tuple[str, time, frozenset[int], tuple[date, ...]]


def ship_clock(node: NodeUpserted) -> ShipClock:
    """What a node's ship date depends on: nodes alike in it share one (a handful for tens of nodes)."""
    return node.timezone, node.cutoff_local, node_week(node), node.non_working_days


#: The key of `NetworkView.ship_clocks` in `NetworkView.derived`.
_CLOCKS_KEY = "network.ship_clocks"


@dataclass(frozen=True, slots=True, eq=False)
class NetworkView:
    """What is known about the network now; read-only (build a new one with `apply`).

    `nodes` holds each node's latest `NodeUpserted`, with its `open` flag and
    standing `daily_capacity` kept current by status and capacity changes.
    """

    nodes: Mapping[str, NodeUpserted] = field(default_factory=_empty)
    #: Capacity for one local day of one node, overriding the standing capacity.
    capacity_overrides: Mapping[tuple[str, date], int] = field(default_factory=_empty)
    services: Mapping[str, CarrierServiceUpserted] = field(default_factory=_empty)
    #: Outages by outage id (a later event with the same id replaces the earlier one).
    outages: Mapping[str, CarrierOutage] = field(default_factory=_empty)
    #: What decisions derive from this view and keep with it (the view never changes, so they never
    #: go stale): by the deriving module's own key. A new view starts empty.
    derived: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def empty(cls) -> NetworkView:
        """A network with nothing in it."""
        return cls()

    def apply(self, event: EventPayload) -> NetworkView:
        """The view after `event`; events of other types, and changes to unknown nodes, change nothing."""
        if isinstance(event, NodeUpserted):
            return replace(self, nodes=_with(self.nodes, event.node_id, event))
        if isinstance(event, NodeStatusChanged):
            node = self.nodes.get(event.node_id)
            if node is None or node.open == event.open:
                return self
            return replace(
                self, nodes=_with(self.nodes, node.node_id, node.model_copy(update={"open": event.open}))
            )
        if isinstance(event, NodeCapacityChanged):
            return self._apply_capacity(event)
        if isinstance(event, CarrierServiceUpserted):
            return replace(self, services=_with(self.services, event.service_id, event))
        if isinstance(event, CarrierOutage):
            return replace(self, outages=_with(self.outages, event.outage_id, event))
        return self

    def _apply_capacity(self, event: NodeCapacityChanged) -> NetworkView:
        node = self.nodes.get(event.node_id)
        if node is None:
            return self
        if event.for_date is not None:
            key = (event.node_id, event.for_date)
            return replace(self, capacity_overrides=_with(self.capacity_overrides, key, event.daily_capacity))
        changed = node.model_copy(update={"daily_capacity": event.daily_capacity})
        return replace(self, nodes=_with(self.nodes, node.node_id, changed))

    def without_outages_ended_before(self, at: datetime) -> NetworkView:
        """The view less the outages that ended before `at` (a long-running stage calls it now and then)."""
        live = {k: o for k, o in self.outages.items() if o.ends_at is None or o.ends_at >= at}
        return self if len(live) == len(self.outages) else replace(self, outages=MappingProxyType(live))

    def node_open(self, node_id: str) -> bool:
        """Whether the node is known and takes work."""
        node = self.nodes.get(node_id)
        return node is not None and node.open

    def capacity_on(self, node_id: str, day: date) -> int:
        """Work orders the node can take on its local `day` (0 for an unknown node)."""
        override = self.capacity_overrides.get((node_id, day))
        if override is not None:
            return override
        node = self.nodes.get(node_id)
        return 0 if node is None else node.daily_capacity

    def ship_date(self, node_id: str, at: datetime) -> date:
        """The day a shipment planned at `at` leaves the node, whose capacity it counts against
        (UTC's date for an unknown node)."""
        node = self.nodes.get(node_id)
        if node is None:
            return at.astimezone(UTC).date()
        return ship_day(node, at)[0]

    def ship_clocks(self) -> tuple[Mapping[str, int], tuple[NodeUpserted, ...]]:
        """Each node's ship clock (`ship_clock`) by number, and a node of each number: nodes alike in
        it share their ship date, a handful of clocks for tens of nodes. Worked out once per view,
        which never changes; callers ask it for every decision and promise quote."""
        known = self.derived.get(_CLOCKS_KEY)
        if known is None:
            numbers: dict[ShipClock, int] = {}
            of_node: dict[str, int] = {}
            first: list[NodeUpserted] = []
            for node_id, node in self.nodes.items():
                clock = ship_clock(node)
                number = numbers.get(clock)
                if number is None:
                    number = numbers[clock] = len(first)
                    first.append(node)
                of_node[node_id] = number
            known = self.derived[_CLOCKS_KEY] = (MappingProxyType(of_node), tuple(first))
        clocks: tuple[Mapping[str, int], tuple[NodeUpserted, ...]] = known
        return clocks

    def load_on_ship_dates(self, planned: Mapping[tuple[str, date], int], at: datetime) -> dict[str, int]:
        """Shipments planned per node on the day a shipment planned at `at` would leave it, from
        shipments per (node, day): what `decide` checks each node's capacity against."""
        of_node, first = self.ship_clocks()
        ship_dates: list[date | None] = [None] * len(first)
        out: dict[str, int] = {}
        for (node_id, day), shipments in planned.items():
            if not shipments:
                continue
            number = of_node.get(node_id)
            if number is None:
                ships = at.astimezone(UTC).date()
            else:
                known = ship_dates[number]
                if known is None:
                    known = ship_dates[number] = ship_day(first[number], at)[0]
                ships = known
            if day == ships:
                out[node_id] = shipments
        return out

    def services_available(self, at: datetime) -> list[CarrierServiceUpserted]:
        """Active services not in an outage at `at`, sorted by service id (so decisions are stable)."""
        out_services: set[str] = set()
        out_carriers: set[str] = set()
        for outage in self.outages.values():
            if outage.starts_at <= at and (outage.ends_at is None or at < outage.ends_at):
                if outage.service_id is None:
                    out_carriers.add(outage.carrier)
                else:
                    out_services.add(outage.service_id)
        return [
            service
            for service_id, service in sorted(self.services.items())
            if service.active and service_id not in out_services and service.carrier not in out_carriers
        ]


def network_from_events(events: Iterable[EventPayload]) -> NetworkView:
    """Fold events, oldest first, into a view of the network."""
    view = NetworkView.empty()
    for event in events:
        view = view.apply(event)
    return view


__all__ = [
    "EVERY_DAY",
    "SHIP_DAY_SEARCH_DAYS",
    "WEEKDAYS",
    "NetworkView",
    "ShipClock",
    "network_from_events",
    "node_week",
    "service_week",
    "ship_clock",
    "ship_day",
]
