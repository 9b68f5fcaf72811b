"""The sourcing decision: which nodes fulfil which lines of an order, by which carrier service, and why.

`decide` is a pure function of the order, the network, the stock and the
policy. It works in five steps:

1. Where the goods go (`_Destination`): the customer's address at the chosen
   speed (raised by the customer tier's rule), or the store where the
   customer collects (BOPIS, ship-to-store), at any speed.
2. What every node can do for every line (`_Candidate`): the hard
   constraints, each failure a `Reason` on the node's verdict, and for each
   node the carrier services that reach the destination, priced and dated
   once (ship date from the node's cut-off, transit in working days, late
   penalty from the promised date).
3. What is fixed before the search: BOPIS lines in stock at the pickup store
   are handed over there; a line no single node holds in full is split over
   the nodes that hold some (nodes already shipping first, then the largest).
4. The search assigns whole lines to nodes, minimising shipping, lateness,
   handling, capacity pressure and split costs less the ranked-node bonuses,
   within `max_shipments` (one shipment for a ship-complete order): branch
   and bound up to `policy.exact_search_max_lines` lines, greedy beyond.
5. The plan: shipments, back-orders, the outcome, every candidate's verdict
   and the explanation in sentences.

Outcomes: SHIP when every unit is planned; UNFULFILLABLE when some line can
never be served by any node (labels, a missing vendor, no carrier service
at all: passing causes such as a closed node or an outage do not count);
otherwise a shortage either holds the whole order (HOLD_FOR_STOCK, for
ship-complete orders and the `hold_for_stock` policy) or ships what it can
(PARTIAL, or BACKORDER when that is nothing).

Look-ahead (`policy.lookahead`, prices from `orchestrator.domain.lookahead`):
with `opportunity` prices given, every unit the search takes from a node
also costs `weight` x its price there, what that unit is expected to be
worth to later orders. The term steers the search (the whole-line
assignment, its bounds, and which nodes a split line takes first); the
plan's `total_cost` stays what the plan costs now (shipping, handling,
splits), since operators and repair limits read it as money, and one
sentence says when the look-ahead moved the plan off the cheapest one.

The search works on plain floats and small slotted objects; pydantic
models are built only for the final plan (it runs for every order).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from types import MappingProxyType

from orchestrator.contract.common import (
    Address,
    CarrierAssignment,
    HomeDelivery,
    NodeCapability,
    NodeKind,
    OrderLine,
    ProductLabel,
    ServiceLevel,
    StorePickup,
)
from orchestrator.contract.network import CarrierServiceUpserted, NodeUpserted, ZoneTableCost
from orchestrator.contract.orders import OrderCreated
from orchestrator.contract.pipeline import PlanDecided, PlanOutcome
from orchestrator.domain.geo import haversine_km
from orchestrator.domain.learning import NO_RISK, RoutingRisk
from orchestrator.domain.network import (
    WEEKDAYS,
    NetworkView,
    service_week,
    ship_day,
)
from orchestrator.domain.policy import Policy

#: Units of a SKU available now at a node: (node_id, sku) -> units, already net of
#: reservations and safety stock. Missing keys mean none.
StockView = Mapping[tuple[str, str], int]

#: No look-ahead prices: (node_id, sku) -> cost per unit, empty (myopic sourcing).
NO_OPPORTUNITY: Mapping[tuple[str, str], float] = MappingProxyType({})

# Reason codes on candidate verdicts (stable: dashboards and playbooks match on them).
NODE_CLOSED = "node_closed"
EXCLUDED = "excluded"
NO_STOCK = "no_stock"
NO_CAPACITY = "no_capacity"
NOT_HAZMAT_CAPABLE = "not_hazmat_capable"
NOT_OVERSIZE_CAPABLE = "not_oversize_capable"
DROP_SHIP_ONLY = "drop_ship_only"
SHIP_FROM_STORE_DISABLED = "ship_from_store_disabled"
CHANNEL_RULE = "channel_rule"
NO_CARRIER = "no_carrier"
RECEIVING_STORE = "receiving_store"
BREAKER_OPEN = "breaker_open"

#: Reason codes in the order a verdict lists them: the node first, then its lines.
REASON_ORDER: tuple[str, ...] = (
    NODE_CLOSED,
    BREAKER_OPEN,
    EXCLUDED,
    NO_CAPACITY,
    RECEIVING_STORE,
    CHANNEL_RULE,
    SHIP_FROM_STORE_DISABLED,
    NO_CARRIER,
    DROP_SHIP_ONLY,
    NOT_HAZMAT_CAPABLE,
    NOT_OVERSIZE_CAPABLE,
    NO_STOCK,
)

#: Position of each reason code in REASON_ORDER.
_REASON_RANK: Mapping[str, int] = {code: rank for rank, code in enumerate(REASON_ORDER)}

#: The multiplication sign between a SKU and its units in explanations ("SKU-KETTLE-BLK x1").
TIMES = "\u00d7"

#: The carrier assignment of goods the customer collects at the node that holds them.
IN_STORE_PICKUP = CarrierAssignment(carrier="store", service_id="in-store-pickup")

_LEVEL_RANK: Mapping[ServiceLevel, int] = {
    ServiceLevel.GROUND: 0,
    ServiceLevel.STANDARD: 1,
    ServiceLevel.EXPRESS: 2,
    ServiceLevel.NEXT_DAY: 3,
}
# "standard" home delivery accepts any service; faster choices need at least their level.
_REQUESTED_LEVEL: Mapping[str, ServiceLevel] = {
    "standard": ServiceLevel.GROUND,
    "express": ServiceLevel.EXPRESS,
    "next_day": ServiceLevel.NEXT_DAY,
}

# A shipment's handling class: a bit mask of what its lines need from the carrier service.
_HAZMAT = 1
_OVERSIZE = 2
_CLASSES = 4

# The search's price of leaving one unit behind: larger than any real plan, so a
# plan that ships more units always beats one that back-orders them. Per unit, not
# per line: when max_shipments leaves one line out, it is the line with fewest units.
_BACKORDER_PENALTY = 1_000_000.0
# Branch and bound is exact, but a pathological order (many lines, many equal
# nodes) must not stall a stage: past this many search nodes it keeps the best so far.
_SEARCH_BUDGET = 200_000
_EPS = 1e-9
_CENT = Decimal("0.01")
_MAX_TEXT = 2000


# ---------------------------------------------------------------------------
# Inputs, digested
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Line:
    """An order line with what the search needs of it as plain values."""

    pos: int
    line: OrderLine
    line_id: str
    sku: str
    quantity: int
    vendor: str | None
    unit_weight: float
    unit_weight_kg: Decimal
    #: Handling class: bit mask of hazmat/oversize.
    mask: int

    @property
    def weight(self) -> float:
        return self.unit_weight * self.quantity

    def label(self, units: int | None = None) -> str:
        """`1 (SKU-KETTLE-BLK x1)`, or `1 (SKU-KETTLE-BLK x2 of 5)` for part of the line (x is TIMES)."""
        if units is None or units == self.quantity:
            return f"{self.line_id} ({self.sku} {TIMES}{self.quantity})"
        return f"{self.line_id} ({self.sku} {TIMES}{units} of {self.quantity})"


def _digest_lines(order: OrderCreated, policy: Policy) -> list[_Line]:
    default_weight = Decimal(str(policy.default_unit_weight_kg))
    lines = []
    for pos, line in enumerate(order.lines):
        weight = line.unit_weight_kg if line.unit_weight_kg is not None else default_weight
        mask = (_HAZMAT if ProductLabel.HAZMAT in line.labels else 0) | (
            _OVERSIZE if ProductLabel.OVERSIZE in line.labels else 0
        )
        lines.append(
            _Line(
                pos=pos,
                line=line,
                line_id=line.line_id,
                sku=line.sku,
                quantity=line.quantity,
                vendor=line.drop_ship_vendor_id,
                unit_weight=float(weight),
                unit_weight_kg=weight,
                mask=mask,
            )
        )
    return lines


def _handling_classes(lines: Sequence[_Line]) -> frozenset[int]:
    """Every handling class a shipment of these lines can have (the line classes, combined)."""
    classes = {0}
    for line in lines:
        classes |= {mask | line.mask for mask in classes}
    return frozenset(classes)


@dataclass(frozen=True, slots=True)
class _Destination:
    """Where the goods go and how fast; for collect orders, the store."""

    address: Address
    min_level: ServiceLevel
    #: The store where the customer collects (BOPIS or ship-to-store).
    collect_store_id: str | None = None
    #: BOPIS: lines in stock at the pickup store are handed over there.
    pin_collect_lines: bool = False
    #: False: no carrier shipments at all (BOPIS without transfers).
    carrier_shipments: bool = True
    #: Why nothing can be planned now (the collect store is closed).
    blocked: str | None = None


#: Stands in for the destination of an order that can go nowhere, so the rest of the
#: decision needs no special case; no carrier service serves country ZZ.
_NOWHERE = _Destination(
    Address(line1="nowhere", city="nowhere", postal_code="0", country="ZZ", latitude=0, longitude=0),
    ServiceLevel.GROUND,
)


def _destination(order: OrderCreated, network: NetworkView, policy: Policy) -> _Destination | str:
    """Where the order goes, or why no line of it can ever be planned."""
    delivery = order.delivery
    if isinstance(delivery, HomeDelivery):
        if order.ship_to is None:
            return "the order has no ship-to address"
        level = _REQUESTED_LEVEL[delivery.kind]
        upgrade = policy.min_service_level(order.customer_tier)
        # A tier upgrade is a courtesy: it must not make goods that only travel by ground
        # (hazmat) impossible to ship.
        ground_only = any(ProductLabel.HAZMAT in line.labels for line in order.lines)
        if upgrade is not None and _LEVEL_RANK[upgrade] > _LEVEL_RANK[level] and not ground_only:
            level = upgrade
        return _Destination(order.ship_to, level)
    bopis = isinstance(delivery, StorePickup)
    if isinstance(delivery, StorePickup):
        store_id, capability, what = delivery.pickup_store_id, NodeCapability.BOPIS_PICKUP, "pickup store"
    else:
        store_id, capability, what = (
            delivery.store_id,
            NodeCapability.SHIP_TO_STORE_RECEIVE,
            "receiving store",
        )
    store = network.nodes.get(store_id)
    if store is None:
        return f"{what} {store_id} is not in the network"
    if capability not in store.capabilities:
        return f"{what} {store_id} lacks the {capability.value} capability"
    # Collected goods wait in the store, so any service level will do: the late
    # penalty judges the dates. The customer's chosen speed is for home deliveries.
    return _Destination(
        address=store.location,
        min_level=ServiceLevel.GROUND,
        collect_store_id=store_id,
        pin_collect_lines=bopis,
        carrier_shipments=policy.bopis.allow_transfer_to_pickup_store or not bopis,
        blocked=None if store.open else f"{what} {store_id} is closed",
    )


# ---------------------------------------------------------------------------
# Carrier services, priced for this destination
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Quote:
    """A carrier service's terms for this order's destination, before the shipping node is known."""

    service: CarrierServiceUpserted
    base: float
    per_kg: float
    #: Zone tables: the destination zone's surcharge. None: priced by distance bands.
    zone_surcharge: Decimal | None
    #: Distance bands as (max_km, surcharge, surcharge as float).
    bands: tuple[tuple[float, Decimal, float], ...]
    #: The handling classes' bits this service accepts (hazmat, oversize).
    handles: int


def _normalise_postcode(code: str) -> str:
    return code.replace(" ", "").upper()


def _zone_surcharge(cost: ZoneTableCost, address: Address) -> Decimal | None:
    """Surcharge of the zone with the longest postal prefix matching the address (None: not served)."""
    postcode = _normalise_postcode(address.postal_code)
    best: tuple[int, Decimal] | None = None
    for zone in cost.zones:
        if zone.country != address.country:
            continue
        prefixes = [_normalise_postcode(p) for p in zone.postal_prefixes] or [""]
        for prefix in prefixes:
            if postcode.startswith(prefix) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), zone.surcharge)
    return None if best is None else best[1]


def _quotes(services: Sequence[CarrierServiceUpserted], dest: _Destination) -> list[_Quote]:
    """Services that reach the destination at the required level, with their terms as floats."""
    min_rank = _LEVEL_RANK[dest.min_level]
    quotes = []
    for service in services:
        if dest.address.country not in service.countries or _LEVEL_RANK[service.service_level] < min_rank:
            continue
        cost = service.cost
        zone_surcharge: Decimal | None = None
        bands: tuple[tuple[float, Decimal, float], ...] = ()
        if isinstance(cost, ZoneTableCost):
            zone_surcharge = _zone_surcharge(cost, dest.address)
            if zone_surcharge is None:
                continue
        else:
            bands = tuple((band.max_km, band.surcharge, float(band.surcharge)) for band in cost.bands)
        quotes.append(
            _Quote(
                service=service,
                base=float(cost.base),
                per_kg=float(cost.per_kg),
                zone_surcharge=zone_surcharge,
                bands=bands,
                # Dangerous goods travel by road only.
                handles=(
                    _HAZMAT if service.hazmat_allowed and service.service_level is ServiceLevel.GROUND else 0
                )
                | (_OVERSIZE if service.oversize_allowed else 0),
            )
        )
    return quotes


@dataclass(slots=True)
class _Rate:
    """One way to carry a shipment from one node: a service, its price and its dates."""

    #: None: handed over in the store that holds the goods.
    quote: _Quote | None
    #: Everything that does not depend on weight: base, surcharge and late penalty.
    fixed: float
    per_kg: float
    surcharge: Decimal
    delivery: date
    late_days: int
    #: The handling classes' bits it accepts.
    handles: int

    def cost(self, weight: float) -> float:
        return self.fixed + self.per_kg * weight

    def shipping_cost(self, weight_kg: Decimal) -> Decimal:
        """What the carrier charges, exactly, in the currency's cents."""
        if self.quote is None:
            return Decimal("0.00")
        cost = self.quote.service.cost
        price = cost.base + cost.per_kg * weight_kg + self.surcharge
        return price.quantize(_CENT, rounding=ROUND_HALF_UP)


_ORDINARY_ONLY = frozenset({0})


def _classes(rates: list[_Rate], needed: frozenset[int]) -> tuple[tuple[_Rate, ...], ...]:
    """Rates usable by each handling class (index = bit mask), for the classes the order can need."""
    if needed == _ORDINARY_ONLY:
        # Most orders: every rate carries an ordinary shipment.
        return (tuple(rates), (), (), ())
    return tuple(
        tuple(rate for rate in rates if not mask & ~rate.handles) if mask in needed else ()
        for mask in range(_CLASSES)
    )


# ---------------------------------------------------------------------------
# Candidates: what each node can do for each line
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class _NodeFacts:
    """What a decision reads of a node that no order changes, read off its event once per network
    view: a pydantic model's attributes cost several times a slot's, fifty nodes a decision."""

    node: NodeUpserted
    node_id: str
    kind: NodeKind
    open: bool
    #: Handling classes it can take (_HAZMAT, _OVERSIZE bits).
    handles: int
    ships_from_store: bool
    latitude: float
    longitude: float
    #: Its ship clock's number (`NetworkView.ship_clocks`): nodes of one number share a ship date.
    clock: int


def _facts_of(node: NodeUpserted, clock: int) -> _NodeFacts:
    caps = node.capabilities
    return _NodeFacts(
        node=node,
        node_id=node.node_id,
        kind=node.kind,
        open=node.open,
        handles=(_HAZMAT if NodeCapability.HAZMAT in caps else 0)
        | (_OVERSIZE if NodeCapability.OVERSIZE in caps else 0),
        ships_from_store=NodeCapability.SHIP_FROM_STORE in caps,
        latitude=node.location.latitude,
        longitude=node.location.longitude,
        clock=clock,
    )


#: The key of the node facts in `NetworkView.derived`.
_FACTS_KEY = "sourcing.node_facts"


def _node_facts(network: NetworkView) -> list[_NodeFacts]:
    """Every node's facts, by node id: worked out once per network view, which never changes (a
    change of the network is a new view, with nothing derived yet)."""
    facts: list[_NodeFacts] | None = network.derived.get(_FACTS_KEY)
    if facts is None:
        clocks, _ = network.ship_clocks()
        facts = network.derived[_FACTS_KEY] = [
            _facts_of(network.nodes[n], clocks[n]) for n in sorted(network.nodes)
        ]
    return facts


@dataclass(slots=True, init=False)
class _Candidate:
    """One node as a source for this order.

    Its `__init__` is written out: mypyc compiles a written one, while the one `dataclass` makes is
    interpreted, and fifty candidates are made for every decision and promise quote.
    """

    index: int
    node: _NodeFacts
    node_id: str
    is_vendor: bool
    #: True: the collect store handing over its own stock (no carrier).
    in_store: bool
    #: Passes the node-wide hard constraints (open, not excluded, capacity, rules, a carrier).
    usable: bool
    #: Per-shipment cost apart from the carrier: handling + capacity pressure - rank bonus.
    fixed: float
    rates: tuple[tuple[_Rate, ...], ...]
    ship_by: datetime | None
    distance_km: float
    #: Reason code -> phrase -> the SKUs it applies to (none for node-wide phrases), in line order.
    reasons: dict[str, dict[str, list[str]]]
    #: Line position -> units it could ship now (only lines that pass every check).
    serves: dict[int, int]
    #: Line position -> the reason code by which this node can never serve the line.
    never: dict[int, str]
    #: A node-wide lasting reason found while pricing carriers (no service reaches the destination).
    never_all: str | None
    min_slope: float
    #: The day a shipment from here would leave (today before the cut-off, else the node's next
    #: working day: `orchestrator.domain.network.ship_day`), and the
    #: shipments the node can take that day (a shipment from here counts against them, and reserve
    #: re-checks them when it holds the plan).
    ships_on: date | None
    capacity: int

    def __init__(self, index: int, node: _NodeFacts, in_store: bool) -> None:
        self.index = index
        self.node = node
        self.node_id = node.node_id
        self.is_vendor = node.kind is NodeKind.DROP_SHIP_VENDOR
        self.in_store = in_store
        self.usable = False
        self.fixed = 0.0
        self.rates = ((), (), (), ())  # none yet for any of the _CLASSES handling classes
        self.ship_by = None
        self.distance_km = 0.0
        self.reasons = {}
        self.serves = {}
        self.never = {}
        self.never_all = None
        self.min_slope = 0.0
        self.ships_on = None
        self.capacity = 0

    def reject(self, code: str, phrase: str, sku: str | None = None) -> None:
        """Record a reason; the SKUs of one phrase are listed together ("no stock of SKU-A, SKU-B")."""
        skus = self.reasons.setdefault(code, {}).setdefault(phrase, [])
        if sku is not None and sku not in skus:
            skus.append(sku)

    def reason_message(self, code: str) -> str:
        phrases = self.reasons[code]
        return _text(
            "; ".join(f"{phrase} {', '.join(skus)}" if skus else phrase for phrase, skus in phrases.items())
        )

    def cost(self, weight: float, mask: int) -> float:
        """Cost of one shipment of this weight and handling class from this node (inf: impossible)."""
        best = math.inf
        for rate in self.rates[mask]:
            cost = rate.fixed + rate.per_kg * weight
            if cost < best:
                best = cost
        return self.fixed + best

    def best_rate(self, weight: float, mask: int) -> _Rate:
        best = self.rates[mask][0]
        for rate in self.rates[mask][1:]:
            if rate.cost(weight) < best.cost(weight) - _EPS:
                best = rate
        return best


@dataclass(slots=True)
class _Context:
    """The inputs of one decision, and what is derived from them once per decision."""

    order: OrderCreated
    network: NetworkView
    stock: StockView
    capacity_used: Mapping[str, int]
    policy: Policy
    now: datetime
    excluded: frozenset[str]
    attempt: int
    dest: _Destination
    lines: list[_Line]
    late_rate: float
    quotes: list[_Quote]
    rank_bonuses: Mapping[str, float]
    #: Handling classes a shipment of this order can have.
    classes: frozenset[int]
    #: The policy's rules for this order's channel.
    excluded_kinds: tuple[NodeKind, ...]
    ship_from_store: bool
    #: What execution taught: risk costs and subjects out of routing.
    risk: RoutingRisk = NO_RISK
    #: Look-ahead price per unit by (node_id, sku); empty: myopic sourcing.
    opportunity: Mapping[tuple[str, str], float] = field(default_factory=lambda: NO_OPPORTUNITY)
    #: The policy's multiplier of those prices.
    lookahead_weight: float = 0.0
    _all_quotes: list[_Quote] | None = None
    # Nodes share time zones, cut-offs and so ship dates: each is worked out once.
    _ship_days: dict[int, tuple[date, datetime]] = field(default_factory=dict)
    _timed: dict[tuple[date, bool], list[tuple[_Quote, date, int, float]]] = field(default_factory=dict)
    _rate_tables: dict[tuple[date, bool], _RateTable] = field(default_factory=dict)

    def all_quotes(self) -> list[_Quote]:
        """Quotes of every active service, outages ignored: tells a passing outage from a lasting gap."""
        if self._all_quotes is None:
            active = [s for _, s in sorted(self.network.services.items()) if s.active]
            self._all_quotes = _quotes(active, self.dest)
        return self._all_quotes

    def ship_day(self, node: _NodeFacts) -> tuple[date, datetime]:
        """(ship date, ship-by in UTC): see `orchestrator.domain.network.ship_day`."""
        known = self._ship_days.get(node.clock)
        if known is None:
            known = self._ship_days[node.clock] = ship_day(node.node, self.now)
        return known

    def late_days(self, delivery: date) -> int:
        return max(0, (delivery - self.order.promised_delivery_date).days)

    def timed_quotes(self, ship_date: date, outages_ignored: bool) -> list[tuple[_Quote, date, int, float]]:
        """Per quote, for goods leaving on `ship_date`: (quote, delivery, days late, base + late penalty)."""
        key = (ship_date, outages_ignored)
        timed = self._timed.get(key)
        if timed is None:
            timed = []
            for quote in self.all_quotes() if outages_ignored else self.quotes:
                service = quote.service
                delivery = after_working_days(
                    ship_date, service.transit_days, service.non_working_days, service_week(service)
                )
                late = self.late_days(delivery)
                timed.append((quote, delivery, late, quote.base + late * self.late_rate))
            self._timed[key] = timed
        return timed

    def rate_table(self, ship_date: date, outages_ignored: bool) -> _RateTable:
        """Per service that routing may use, its rate for goods leaving on `ship_date`: one rate for a
        zone table, else one per distance band. A node only picks by its distance, so the rates of
        tens of nodes are built once per decision instead of once per node."""
        key = (ship_date, outages_ignored)
        table = self._rate_tables.get(key)
        if table is None:
            choices: list[_RateChoice] = []
            for quote, delivery, late, base in self.timed_quotes(ship_date, outages_ignored):
                service_id = quote.service.service_id
                if service_id in self.risk.closed_services:
                    continue  # out of routing: failing far above its normal
                fixed = base + self.risk.service_cost.get(service_id, 0.0)
                surcharge = quote.zone_surcharge
                if surcharge is not None:
                    rate = _Rate(
                        quote,
                        fixed + float(surcharge),
                        quote.per_kg,
                        surcharge,
                        delivery,
                        late,
                        quote.handles,
                    )
                    choices.append((rate, ()))
                    continue
                bands = tuple(
                    (
                        max_km,
                        _Rate(
                            quote, fixed + band_f, quote.per_kg, band_surcharge, delivery, late, quote.handles
                        ),
                    )
                    for max_km, band_surcharge, band_f in quote.bands
                )
                choices.append((None, bands))
            table = self._rate_tables[key] = _RateTable(choices, self.classes)
        return table


#: A service's rate from any node: (the zone table's rate, or None and (max_km, rate) per band).
_RateChoice = tuple["_Rate | None", tuple[tuple[float, "_Rate"], ...]]


class _RateTable:
    """The services' rates for one ship date, looked up by a node's distance.

    Between two neighbouring band limits (of any service) every service picks the same band, so
    the rates, and their split by handling class, are worked out once per such interval, not
    once per node.
    """

    __slots__ = ("_by_interval", "_choices", "_limits", "_needed")

    def __init__(self, choices: list[_RateChoice], needed: frozenset[int]) -> None:
        self._choices = choices
        self._needed = needed
        self._limits = sorted({max_km for _, bands in choices for max_km, _ in bands})
        self._by_interval: dict[int, tuple[list[_Rate], tuple[tuple[_Rate, ...], ...], float]] = {}

    def _at(self, distance: float) -> tuple[list[_Rate], tuple[tuple[_Rate, ...], ...], float]:
        interval = bisect_left(self._limits, distance)
        known = self._by_interval.get(interval)
        if known is None:
            rates = []
            for zone_rate, bands in self._choices:
                if zone_rate is not None:
                    rates.append(zone_rate)
                    continue
                for max_km, rate in bands:
                    if distance <= max_km:
                        rates.append(rate)
                        break
                # beyond the last band: the service does not go that far
            classes = _classes(rates, self._needed)
            min_slope = min((rate.per_kg for rate in classes[0]), default=0.0)
            known = self._by_interval[interval] = (rates, classes, min_slope)
        return known

    def rates(self, distance: float) -> list[_Rate]:
        """The services that carry from a node `distance` km away, priced and dated (do not modify)."""
        return self._at(distance)[0]

    def by_class(self, distance: float) -> tuple[tuple[tuple[_Rate, ...], ...], float]:
        """Those rates usable by each handling class the order can need (see `_classes`), and the
        least cost per kg of an ordinary shipment among them (0 when none)."""
        _, classes, min_slope = self._at(distance)
        return classes, min_slope


def after_working_days(
    start: date, days: int, holidays: Collection[date] = (), week: frozenset[int] = WEEKDAYS
) -> date:
    """The date `days` working days after `start`: transit times count working days, the days of
    `week` (`date.weekday()` numbers; Monday to Friday unless the service says otherwise) less
    `holidays`.

    Counted in whole weeks, not day by day (every decision dates every carrier service this way),
    then a day further for each holiday on the way.
    """
    if days <= 0:
        return start
    if week is WEEKDAYS or week == WEEKDAYS:
        weekday = start.weekday()
        if weekday > 4:
            # From a Saturday or Sunday the first working day after is Monday, as from the Friday before.
            start -= timedelta(days=weekday - 4)
            weekday = 4
        weeks, rest = divmod(days, 5)
        end = start + timedelta(days=7 * weeks + rest + (2 if weekday + rest > 4 else 0))
    else:
        # Any 7 days in a row hold each day of the week once: whole weeks first, then the rest
        # (at least one day, at most a week's worth) counted one by one.
        weeks, rest = divmod(days - 1, len(week))
        end = start + timedelta(days=7 * weeks)
        rest += 1
        while rest:
            end += timedelta(days=1)
            if end.weekday() in week:
                rest -= 1
    if not holidays:
        return end
    skipped = sum(1 for h in holidays if start < h <= end and h.weekday() in week)
    while skipped:
        end += timedelta(days=1)
        if end.weekday() in week and end not in holidays:
            skipped -= 1
    return end


def _carrier_rates(
    ctx: _Context, ship_date: date, distance: float, outages_ignored: bool = False
) -> list[_Rate]:
    """The services that carry from a node `distance` km away, priced and dated."""
    return ctx.rate_table(ship_date, outages_ignored).rates(distance)


def _assess_node(ctx: _Context, index: int, node: _NodeFacts, in_store: bool) -> _Candidate:
    cand = _Candidate(index=index, node=node, in_store=in_store)
    ship_date, cand.ship_by = ctx.ship_day(node)
    # Capacity is what the node can ship in a day: a shipment counts on the day it leaves.
    used, capacity = _node_state(ctx, cand, ship_date)
    cand.ships_on, cand.capacity = ship_date, capacity
    lasting: str | None = None  # a node-wide reason that will not pass by itself
    if in_store:
        late = ctx.late_days(ship_date)
        # Handed over where it stands: no carrier, so every handling class has the one "rate".
        handover = (_Rate(None, late * ctx.late_rate, 0.0, Decimal(0), ship_date, late, _HAZMAT | _OVERSIZE),)
        cand.rates = (handover,) * _CLASSES
        cand.min_slope = 0.0
    elif node.node_id == ctx.dest.collect_store_id:
        # Ship-to-store: the work order to the receiving store's own shelf would have no carrier,
        # which only BOPIS work orders may; so the store is where the goods go, not a source.
        cand.reject(RECEIVING_STORE, "the order is delivered to this store; it does not ship to itself")
        lasting = RECEIVING_STORE
    else:
        lasting = _node_rules(ctx, cand)
        if lasting is None:  # else no line can ever go from here: spare the carrier pricing
            _price_carriers(ctx, cand, ship_date)
            lasting = cand.never_all
    cand.usable = not cand.reasons
    share = 1.0 if capacity <= 0 or used >= capacity else used / capacity
    cand.fixed = (
        ctx.policy.handling_cost(node.kind)
        + ctx.policy.capacity_pressure_weight * share
        - ctx.rank_bonuses.get(node.node_id, 0.0)
        + ctx.risk.node_cost.get(node.node_id, 0.0)
    )
    if lasting is not None:
        # The node-wide reason says it all: no line can ever go from here.
        cand.never = dict.fromkeys(range(len(ctx.lines)), lasting)
        return cand
    for line in ctx.lines:
        if line.vendor is None and not line.mask and not cand.is_vendor:
            # The common case, inline: an ordinary line only needs stock (at a usable node).
            if cand.usable:
                _check_stock(ctx, cand, line)
        else:
            _assess_line(ctx, cand, line, ship_date)
    return cand


def _price_carriers(ctx: _Context, cand: _Candidate, ship_date: date) -> None:
    here, there = cand.node, ctx.dest.address
    cand.distance_km = haversine_km(here.latitude, here.longitude, there.latitude, there.longitude)
    cand.rates, cand.min_slope = ctx.rate_table(ship_date, False).by_class(cand.distance_km)
    if not cand.rates[0]:
        lasting_gap = not _carrier_rates(ctx, ship_date, cand.distance_km, outages_ignored=True)
        cand.reject(NO_CARRIER, _no_carrier_phrase(ctx, lasting_gap))
        if lasting_gap:
            cand.never_all = NO_CARRIER


def _node_state(ctx: _Context, cand: _Candidate, day: date) -> tuple[int, int]:
    """Open, not excluded, capacity left on `day`, the ship date; returns (shipments planned that
    day, capacity that day)."""
    node_id = cand.node_id
    if not cand.node.open:
        cand.reject(NODE_CLOSED, "node is closed")
    if node_id in ctx.risk.closed_nodes:
        cand.reject(BREAKER_OPEN, ctx.risk.closed_nodes[node_id])
    if node_id in ctx.excluded:
        cand.reject(EXCLUDED, f"excluded by re-decide attempt {ctx.attempt}")
    capacity = ctx.network.capacity_on(node_id, day)
    used = ctx.capacity_used.get(node_id, 0)
    if capacity - used <= 0:
        cand.reject(NO_CAPACITY, f"no capacity left on {day.isoformat()} ({used} of {capacity} planned)")
    return used, capacity


def _no_carrier_phrase(ctx: _Context, lasting: bool) -> str:
    where = f"{ctx.dest.address.country} {ctx.dest.address.postal_code}"
    level = ctx.dest.min_level
    speed = "" if level is ServiceLevel.GROUND else f" at {level.value} or faster"
    return f"no carrier service reaches {where}{speed} from here" + ("" if lasting else " (carrier outage)")


def _node_rules(ctx: _Context, cand: _Candidate) -> str | None:
    """Channel and ship-from-store rules of a node shipping by carrier; returns the first reason code."""
    node, channel = cand.node, ctx.order.channel
    lasting = None
    if node.kind in ctx.excluded_kinds:
        cand.reject(CHANNEL_RULE, f"{channel.value} orders never ship from {node.kind.value} nodes")
        lasting = CHANNEL_RULE
    if node.kind is NodeKind.STORE:
        if not node.ships_from_store:
            cand.reject(SHIP_FROM_STORE_DISABLED, "store has no ship_from_store capability")
            lasting = lasting or SHIP_FROM_STORE_DISABLED
        elif not ctx.ship_from_store:
            cand.reject(SHIP_FROM_STORE_DISABLED, f"ship-from-store is off for {channel.value} orders")
            lasting = lasting or SHIP_FROM_STORE_DISABLED
    return lasting


def _drop_ship_rule(cand: _Candidate, line: _Line) -> str | None:
    vendor = line.vendor
    if vendor is not None and vendor != cand.node_id:
        cand.reject(DROP_SHIP_ONLY, f"drop-shipped by {vendor}:", line.sku)
        return DROP_SHIP_ONLY
    if vendor is None and cand.node.kind is NodeKind.DROP_SHIP_VENDOR:
        cand.reject(DROP_SHIP_ONLY, "a drop-ship vendor ships only its own lines, not", line.sku)
        return DROP_SHIP_ONLY
    return None


def _capability_rules(cand: _Candidate, line: _Line) -> str | None:
    handles = cand.node.handles
    never = None
    if line.mask & _HAZMAT and not handles & _HAZMAT:
        cand.reject(NOT_HAZMAT_CAPABLE, "cannot handle hazmat", line.sku)
        never = NOT_HAZMAT_CAPABLE
    if line.mask & _OVERSIZE and not handles & _OVERSIZE:
        cand.reject(NOT_OVERSIZE_CAPABLE, "cannot handle oversize", line.sku)
        never = never or NOT_OVERSIZE_CAPABLE
    return never


def _handling_carrier_gap(ctx: _Context, cand: _Candidate, line: _Line, ship_date: date) -> bool:
    """Record that no service carries this line's handling from here; True when no outage explains it."""
    every = _carrier_rates(ctx, ship_date, cand.distance_km, outages_ignored=True)
    lasting = not any(not line.mask & ~rate.handles for rate in every)
    need = " and ".join(
        what for bit, what in ((_HAZMAT, "hazmat ground"), (_OVERSIZE, "oversize")) if line.mask & bit
    )
    cand.reject(NO_CARRIER, f"no {need} service{'' if lasting else ' (carrier outage)'} for", line.sku)
    return lasting


def _assess_line(ctx: _Context, cand: _Candidate, line: _Line, ship_date: date) -> None:
    """Check a drop-ship or specially handled line at one node: the reasons, and what it could ship now."""
    never = _drop_ship_rule(cand, line) if line.vendor is not None or cand.is_vendor else None
    if line.mask and not cand.in_store:
        never = _capability_rules(cand, line) or never
        if never is None and cand.rates[0] and not cand.rates[line.mask]:
            if not _handling_carrier_gap(ctx, cand, line, ship_date):
                return  # an outage: not today, but maybe later
            never = NO_CARRIER
    if never is not None:
        cand.never[line.pos] = never
        return
    if cand.usable:
        _check_stock(ctx, cand, line)


def _check_stock(ctx: _Context, cand: _Candidate, line: _Line) -> None:
    units = ctx.stock.get((cand.node_id, line.sku), 0)
    if units <= 0:
        cand.reject(NO_STOCK, "no stock of", line.sku)
        return
    if units < line.quantity:
        cand.reject(NO_STOCK, f"only {units} of {line.quantity} {line.sku}")
    cand.serves[line.pos] = min(units, line.quantity)


def _candidates(ctx: _Context) -> list[_Candidate]:
    """Every node considered for the order, sorted by node id."""
    dest = ctx.dest
    facts = _node_facts(ctx.network)
    if not dest.carrier_shipments:
        facts = [node for node in facts if node.node_id == dest.collect_store_id]
    return [
        _assess_node(
            ctx, index, node, in_store=dest.pin_collect_lines and node.node_id == dest.collect_store_id
        )
        for index, node in enumerate(facts)
    ]


#: Reason codes in a few words, for sentences that count nodes by reason.
_CODE_PHRASES: Mapping[str, str] = {
    NODE_CLOSED: "closed",
    BREAKER_OPEN: "out of routing (failing)",
    EXCLUDED: "excluded by the re-decide",
    NO_CAPACITY: "at capacity",
    RECEIVING_STORE: "the receiving store",
    CHANNEL_RULE: "barred for the channel",
    SHIP_FROM_STORE_DISABLED: "ship-from-store not allowed",
    NO_CARRIER: "no carrier service",
    DROP_SHIP_ONLY: "drop-ship rules",
    NOT_HAZMAT_CAPABLE: "not hazmat capable",
    NOT_OVERSIZE_CAPABLE: "not oversize capable",
    NO_STOCK: "short of stock",
}


def _unservable_lines(ctx: _Context, cands: list[_Candidate]) -> dict[int, str]:
    """Lines no node can ever serve, with why (labels, a missing vendor, no carrier at all)."""
    unservable = {}
    for line in ctx.lines:
        if any(line.pos not in cand.never for cand in cands):
            continue
        vendor = line.vendor
        if vendor is not None and vendor not in ctx.network.nodes:
            unservable[line.pos] = f"drop-ship vendor {vendor} is not in the network"
            continue
        if not cands:
            unservable[line.pos] = "no node is in the network"
            continue
        counts: dict[str, int] = {}
        for cand in cands:
            code = cand.never[line.pos]
            counts[code] = counts.get(code, 0) + 1
        parts = [
            f"{_CODE_PHRASES[code]} at {n} node{'' if n == 1 else 's'}"
            for code, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        ]
        unservable[line.pos] = "no node can ever take it (" + "; ".join(parts) + ")"
    return unservable


# ---------------------------------------------------------------------------
# Before the search: pickup lines, split lines, shortages
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Load:
    """What one node ships in the plan being built."""

    items: list[tuple[int, int]]  # (line position, units)
    weight: float
    mask: int

    def add(self, line: _Line, units: int) -> None:
        self.items.append((line.pos, units))
        self.weight += line.unit_weight * units
        self.mask |= line.mask


@dataclass(slots=True)
class _Problem:
    """The search problem: place whole lines on nodes, on top of the loads fixed beforehand."""

    cands: list[_Candidate]
    lines: list[_Line]
    #: Per line: candidates that hold its full quantity.
    options: list[list[int]]
    loads: dict[int, _Load]
    #: Units left per (candidate index, sku) after the fixed loads.
    avail: dict[tuple[int, str], int]
    max_shipments: int
    split_cost: float
    allow_backorder: bool
    #: Per line: candidate index -> look-ahead cost of the whole line there (missing: 0).
    #: None: no look-ahead (myopic), and the search runs exactly as without it.
    extra: list[dict[int, float]] | None = None

    def objective(self, assign: Sequence[int | None]) -> float:
        """The search's cost of an assignment (inf: infeasible); back-orders carry a large penalty.

        With look-ahead, each placed line adds its look-ahead cost at its node.
        """
        loads = {k: (load.weight, load.mask) for k, load in self.loads.items()}
        taken: dict[tuple[int, str], int] = {}
        total = 0.0
        for line, k in zip(self.lines, assign, strict=True):
            if k is None:
                total += _BACKORDER_PENALTY * line.quantity
                continue
            weight, mask = loads.get(k, (0.0, 0))
            loads[k] = (weight + line.weight, mask | line.mask)
            key = (k, line.sku)
            taken[key] = taken.get(key, 0) + line.quantity
            if taken[key] > self.avail.get(key, 0):
                return math.inf
        if len(loads) > self.max_shipments:
            return math.inf
        for k, (weight, mask) in loads.items():
            total += self.cands[k].cost(weight, mask)
        if self.extra is not None:
            total += sum(self.extra[j].get(k, 0.0) for j, k in enumerate(assign) if k is not None)
        return total + self.split_cost * max(0, len(loads) - 1)


@dataclass(slots=True)
class _Prepared:
    """The loads fixed before the search and what is left for it."""

    problem: _Problem
    #: Line position -> units no node can ship now, and why.
    short: dict[int, int]
    short_why: dict[int, str]
    #: Positions of lines split across nodes.
    split_lines: list[int]


def _prepare(
    ctx: _Context,
    cands: list[_Candidate],
    max_shipments: int,
    allow_backorder: bool,
    split_budget: int | None = None,
) -> _Prepared:
    """Fix the loads that come before the search: BOPIS lines pinned to the pickup store, and lines
    no node holds in full spread over nodes (opening at most `split_budget` of them; default
    `max_shipments`). The lines some node holds in full are left for the search."""
    loads: dict[int, _Load] = {}
    avail: dict[tuple[int, str], int] = {}
    for cand in cands:
        for pos in cand.serves:
            sku = ctx.lines[pos].sku
            avail[(cand.index, sku)] = ctx.stock.get((cand.node_id, sku), 0)
    pinned = _pin_pickup_lines(ctx, cands, loads, avail)
    lines, options, split_lines = [], [], []
    short: dict[int, int] = {}
    short_why: dict[int, str] = {}
    for line in ctx.lines:
        if line.pos in pinned:
            continue
        full = [c.index for c in cands if c.serves.get(line.pos, 0) >= line.quantity]
        if full:
            lines.append(line)
            options.append(full)
            continue
        partial = [c.index for c in cands if line.pos in c.serves]
        prices = _unit_prices(ctx, cands, line, partial) if ctx.opportunity else None
        budget = max_shipments if split_budget is None else split_budget
        missing = _split_line(cands, line, partial, loads, avail, budget, prices)
        if len(partial) > 0 and missing < line.quantity:
            split_lines.append(line.pos)
        if missing:
            short[line.pos] = missing
            short_why[line.pos] = _shortage_phrase(line, line.quantity - missing, bool(partial))
    problem = _Problem(
        cands=cands,
        lines=lines,
        options=options,
        loads=loads,
        avail=avail,
        max_shipments=max_shipments,
        split_cost=ctx.policy.split_cost,
        allow_backorder=allow_backorder,
        extra=_line_extras(ctx, cands, lines, options) if ctx.opportunity else None,
    )
    return _Prepared(problem, short, short_why, split_lines)


def _unit_prices(ctx: _Context, cands: list[_Candidate], line: _Line, nodes: list[int]) -> dict[int, float]:
    """Look-ahead cost of one unit of the line at each of these candidates (only those that have one)."""
    prices = {}
    for k in nodes:
        price = ctx.lookahead_weight * ctx.opportunity.get((cands[k].node_id, line.sku), 0.0)
        if price > 0:
            prices[k] = price
    return prices


def _line_extras(
    ctx: _Context, cands: list[_Candidate], lines: list[_Line], options: list[list[int]]
) -> list[dict[int, float]] | None:
    """Look-ahead cost of each whole line at each of its options; None when no option has any."""
    extras = [
        {k: price * line.quantity for k, price in _unit_prices(ctx, cands, line, opts).items()}
        for line, opts in zip(lines, options, strict=True)
    ]
    return extras if any(extras) else None


def _shortage_phrase(line: _Line, available: int, some_stock: bool) -> str:
    if not some_stock:
        return "no eligible node has it in stock"
    if available == 0:
        return "no plan within the shipment limit could take it"
    return f"only {available} of {line.quantity} units can ship now"


def _pin_pickup_lines(
    ctx: _Context, cands: list[_Candidate], loads: dict[int, _Load], avail: dict[tuple[int, str], int]
) -> set[int]:
    """BOPIS: lines in stock at the pickup store are handed over there; returns their positions."""
    if not ctx.dest.pin_collect_lines:
        return set()
    store = next((c for c in cands if c.in_store), None)
    if store is None:
        return set()
    there: dict[str, int] = {}
    held = []
    for line in ctx.lines:
        key = (store.index, line.sku)
        if store.serves.get(line.pos, 0) >= line.quantity and avail.get(key, 0) - there.get(line.sku, 0) >= (
            line.quantity
        ):
            there[line.sku] = there.get(line.sku, 0) + line.quantity
            held.append(line)
    if ctx.order.ship_complete and len(held) < len(ctx.lines):
        # One shipment for the whole order: pinning the lines the store has would leave the rest no
        # node to come from (the search may use one node only), and hold an order a single other node
        # could fill. Then nothing is pinned and the whole order comes from one node to the store.
        return set()
    for line in held:
        loads.setdefault(store.index, _Load([], 0.0, 0)).add(line, line.quantity)
        avail[(store.index, line.sku)] -= line.quantity
    return {line.pos for line in held}


def _split_line(
    cands: list[_Candidate],
    line: _Line,
    partial: list[int],
    loads: dict[int, _Load],
    avail: dict[tuple[int, str], int],
    max_shipments: int,
    prices: Mapping[int, float] | None = None,
) -> int:
    """Spread a line no node holds in full over the nodes that hold some; returns the units left over.

    Nodes already shipping come first, then those with the most units (fewest
    shipments), then the cheapest, look-ahead `prices` per unit included.
    """

    def preference(k: int) -> tuple[bool, int, float, str]:
        units = min(avail.get((k, line.sku), 0), line.quantity)
        cost = cands[k].cost(line.unit_weight * units, line.mask)
        if prices:
            cost += prices.get(k, 0.0) * units
        return (k not in loads, -units, cost, cands[k].node_id)

    missing = line.quantity
    for k in sorted(partial, key=preference):
        units = min(avail.get((k, line.sku), 0), missing)
        if units <= 0 or (k not in loads and len(loads) >= max_shipments):
            continue
        load = loads.get(k)
        if not cands[k].rates[(0 if load is None else load.mask) | line.mask]:
            continue
        loads.setdefault(k, _Load([], 0.0, 0)).add(line, units)
        avail[(k, line.sku)] -= units
        missing -= units
        if missing == 0:
            break
    return missing


# ---------------------------------------------------------------------------
# The search
# ---------------------------------------------------------------------------


def _greedy(p: _Problem) -> list[int | None] | None:
    """Fewest shipments first: repeatedly take the node that covers most remaining lines, cheapest first.

    Then move single lines between the chosen nodes while that lowers the cost.
    None when some line finds no node and back-orders are not allowed.
    """
    assign: list[int | None] = [None] * len(p.lines)
    loads = {k: (load.weight, load.mask) for k, load in p.loads.items()}
    avail = dict(p.avail)
    remaining = list(range(len(p.lines)))
    option_sets = [set(options) for options in p.options]
    nodes = sorted({k for options in p.options for k in options})
    while remaining:
        choice = _greedy_pick(p, nodes, remaining, option_sets, loads, avail)
        if choice is None:
            break
        k, taken, weight, mask = choice
        loads[k] = (weight, mask)
        for j in taken:
            assign[j] = k
            avail[(k, p.lines[j].sku)] -= p.lines[j].quantity
        remaining = [j for j in remaining if j not in taken]
    if remaining and not p.allow_backorder:
        return None
    return _improve(p, assign)


def _greedy_pick(
    p: _Problem,
    nodes: list[int],
    remaining: list[int],
    option_sets: list[set[int]],
    loads: dict[int, tuple[float, int]],
    avail: dict[tuple[int, str], int],
) -> tuple[int, list[int], float, int] | None:
    best: tuple[int, float, int] | None = None
    choice = None
    for k in nodes:
        cand = p.cands[k]
        load = loads.get(k)
        if load is None and len(loads) >= p.max_shipments:
            continue
        weight, mask = load if load is not None else (0.0, 0)
        taken: list[int] = []
        used: dict[str, int] = {}
        for j in remaining:
            line = p.lines[j]
            if k not in option_sets[j]:
                continue
            if avail.get((k, line.sku), 0) - used.get(line.sku, 0) < line.quantity:
                continue
            if not cand.rates[mask | line.mask]:
                continue
            taken.append(j)
            used[line.sku] = used.get(line.sku, 0) + line.quantity
            weight += line.weight
            mask |= line.mask
        if not taken:
            continue
        if load is None:
            delta = cand.cost(weight, mask) + (p.split_cost if loads else 0.0)
        else:
            delta = cand.cost(weight, mask) - cand.cost(*load)
        if p.extra is not None:
            delta += sum(p.extra[j].get(k, 0.0) for j in taken)
        key = (-len(taken), delta, k)
        if best is None or key < best:
            best = key
            choice = (k, taken, weight, mask)
    return choice


def _improve(p: _Problem, assign: list[int | None]) -> list[int | None]:
    """Move single lines to other nodes already in the plan while that lowers the cost."""
    cost = p.objective(assign)
    while (move := _cheaper_move(p, assign, cost)) is not None:
        assign, cost = move  # the cost falls strictly, so this ends
    return assign


def _cheaper_move(
    p: _Problem, assign: list[int | None], cost: float
) -> tuple[list[int | None], float] | None:
    in_plan = sorted({k for k in assign if k is not None} | set(p.loads))
    for j, current in enumerate(assign):
        if current is None:
            continue
        for k in in_plan:
            if k == current or k not in p.options[j]:
                continue
            trial = [*assign[:j], k, *assign[j + 1 :]]
            trial_cost = p.objective(trial)
            if trial_cost < cost - _EPS:
                return trial, trial_cost
    return None


class _BranchAndBound:
    """Exact search over assignments of whole lines to nodes (or to the back-order list).

    Lines are placed most-constrained first. A partial assignment is dropped
    when its cost plus a lower bound for the remaining lines cannot beat the
    best plan found so far (the greedy plan to begin with). Opening a new node
    is tried cheapest first and stops at the first that cannot win.

    With look-ahead, a line's cost at a node includes its look-ahead cost there:
    in the moves, in the openings (ordered by shipping plus look-ahead), and in
    the bound, where every remaining line adds at least its cheapest look-ahead
    cost (see `_bound_with_extra`).
    """

    def __init__(self, p: _Problem, incumbent: list[int | None] | None) -> None:
        self.p = p
        order = sorted(range(len(p.lines)), key=lambda j: (len(p.options[j]), -p.lines[j].quantity, j))
        self.order = order
        self.lines = [p.lines[j] for j in order]
        self.option_sets = [frozenset(p.options[j]) for j in order]
        self.weights = [line.weight for line in self.lines]
        #: Per line (in search order): candidate -> look-ahead cost of the line there; None: myopic.
        self.extra = None if p.extra is None else [p.extra[j] for j in order]
        #: Per line: the least look-ahead cost any of its options adds.
        self.min_extra = [
            min((extra.get(k, 0.0) for k in options), default=0.0)
            for extra, options in zip(self.extra or (), self.option_sets, strict=False)
        ]
        # Per line: (shipping + look-ahead cost of opening the node with it, node, shipping alone).
        self.openings: list[list[tuple[float, int, float]]] = []
        for position, (line, weight, options) in enumerate(
            zip(self.lines, self.weights, (p.options[j] for j in order), strict=True)
        ):
            extra = None if self.extra is None else self.extra[position]
            opening = []
            for k in options:
                ship = p.cands[k].cost(weight, line.mask)
                if ship < math.inf:
                    opening.append((ship if extra is None else ship + extra.get(k, 0.0), k, ship))
            self.openings.append(sorted(opening))
        self.min_open = [opening[0][0] if opening else math.inf for opening in self.openings]
        #: Per line: what leaving it behind costs the search.
        self.penalty = [_BACKORDER_PENALTY * line.quantity for line in self.lines]
        fixed = [p.cands[k].fixed for k in {k for options in p.options for k in options}]
        self.neg_floor = min(0.0, min((f + p.split_cost for f in fixed), default=0.0))
        self.min_slope = min((c.min_slope for c in p.cands), default=0.0)
        # Search state: the current load of every node in the plan, and the stock left.
        self.load: dict[int, tuple[float, int, float]] = {
            k: (load.weight, load.mask, p.cands[k].cost(load.weight, load.mask))
            for k, load in p.loads.items()
        }
        self.avail = dict(p.avail)
        self.assign: list[int | None] = [None] * len(order)
        self.best: list[int | None] | None = None
        self.best_cost = math.inf
        if incumbent is not None:
            self.best = [incumbent[j] for j in order]
            self.best_cost = p.objective(incumbent)
        self.budget = _SEARCH_BUDGET

    def solve(self) -> list[int | None] | None:
        """The best assignment, indexed like the problem's lines (None when no plan exists)."""
        start = sum(cost for _, _, cost in self.load.values())
        start += self.p.split_cost * max(0, len(self.load) - 1)
        self._visit(0, start)
        if self.best is None:
            return None
        result: list[int | None] = [None] * len(self.order)
        for position, j in enumerate(self.order):
            result[j] = self.best[position]
        return result

    def _bound(self, i: int) -> float:
        """A lower bound on what placing lines i.. adds to the cost."""
        if self.extra is not None:
            return self._bound_with_extra(i)
        p = self.p
        open_nodes = self.load.keys()
        slots = p.max_shipments - len(self.load)
        extra = p.split_cost if self.load else 0.0
        bound = 0.0
        worst_new = 0.0
        for j in range(i, len(self.lines)):
            if self.option_sets[j].isdisjoint(open_nodes):
                # Some new node must take the line (or it waits): at least the cheapest opening.
                new = self.min_open[j] + extra if slots > 0 else math.inf
                if p.allow_backorder and new > self.penalty[j]:
                    new = self.penalty[j]
                worst_new = max(worst_new, new)
            else:
                bound += self.weights[j] * self.min_slope
        return bound + worst_new + self.neg_floor * max(0, slots)

    def _bound_with_extra(self, i: int) -> float:
        """`_bound` with look-ahead costs, still a lower bound.

        A line that can go to a node already open adds at least the cheapest slope times its
        weight plus its least look-ahead cost (or the back-order penalty, if that is less). Lines
        that need a new node: each that is placed pays at least its least look-ahead cost, and the
        new nodes cost at least the dearest single opening among them (shipping and look-ahead of
        that line); a line that waits pays the back-order penalty instead. So one line m is charged
        its whole opening (capped by the penalty) and the others their least look-ahead cost, all
        of which each line pays however the rest is placed.
        """
        p = self.p
        assert self.extra is not None
        open_nodes = self.load.keys()
        slots = p.max_shipments - len(self.load)
        extra_split = p.split_cost if self.load else 0.0
        bound = 0.0
        worst_new = 0.0
        for j in range(i, len(self.lines)):
            cap = self.penalty[j] if p.allow_backorder else math.inf
            least = min(self.min_extra[j], self.penalty[j])
            if self.option_sets[j].isdisjoint(open_nodes):
                new = min(self.min_open[j] + extra_split if slots > 0 else math.inf, cap)
                bound += least
                worst_new = max(worst_new, new - least)
            else:
                bound += min(self.weights[j] * self.min_slope + least, cap)
        return bound + worst_new + self.neg_floor * max(0, slots)

    def _visit(self, i: int, cost: float) -> None:
        self.budget -= 1
        if i == len(self.lines):
            if cost < self.best_cost - _EPS:
                self.best_cost = cost
                self.best = list(self.assign)
            return
        if self.budget < 0 or cost + self._bound(i) >= self.best_cost - _EPS:
            return
        self._place_on_open_nodes(i, cost)
        self._place_on_new_nodes(i, cost)
        if self.p.allow_backorder:
            self.assign[i] = None
            self._visit(i + 1, cost + self.penalty[i])

    def _place_on_open_nodes(self, i: int, cost: float) -> None:
        line, weight = self.lines[i], self.weights[i]
        extra = None if self.extra is None else self.extra[i]
        moves = []
        for k, (load_weight, load_mask, load_cost) in self.load.items():
            if k not in self.option_sets[i] or self.avail[(k, line.sku)] < line.quantity:
                continue
            new_cost = self.p.cands[k].cost(load_weight + weight, load_mask | line.mask)
            if new_cost < math.inf:
                delta = new_cost - load_cost
                moves.append((delta if extra is None else delta + extra.get(k, 0.0), k, new_cost))
        moves.sort()
        for delta, k, new_cost in moves:
            previous = self.load[k]
            self.load[k] = (previous[0] + weight, previous[1] | line.mask, new_cost)
            self.avail[(k, line.sku)] -= line.quantity
            self.assign[i] = k
            self._visit(i + 1, cost + delta)
            self.avail[(k, line.sku)] += line.quantity
            self.load[k] = previous

    def _place_on_new_nodes(self, i: int, cost: float) -> None:
        p = self.p
        slots = p.max_shipments - len(self.load)
        if slots <= 0:
            return
        line, weight = self.lines[i], self.weights[i]
        extra = p.split_cost if self.load else 0.0
        floor = self.neg_floor * (slots - 1)
        for opening_cost, k, ship_cost in self.openings[i]:
            if cost + opening_cost + extra + floor >= self.best_cost - _EPS:
                break  # sorted: no later node can do better
            if k in self.load or self.avail[(k, line.sku)] < line.quantity:
                continue
            self.load[k] = (weight, line.mask, ship_cost)
            self.avail[(k, line.sku)] -= line.quantity
            self.assign[i] = k
            self._visit(i + 1, cost + opening_cost + extra)
            self.avail[(k, line.sku)] += line.quantity
            del self.load[k]


def _search(p: _Problem, exact: bool) -> list[int | None] | None:
    """Place the whole lines: greedy, then (for small orders) branch and bound from the greedy plan."""
    if not p.lines:
        return []
    incumbent = _greedy(p)
    if not exact:
        return incumbent
    return _BranchAndBound(p, incumbent).solve()


# ---------------------------------------------------------------------------
# The decision
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Verdict:
    """What the decision does with the order, before it is written up as a PlanDecided."""

    outcome: PlanOutcome
    loads: dict[int, _Load] = field(default_factory=dict)
    #: Line position -> units waiting for stock.
    backordered: dict[int, int] = field(default_factory=dict)
    #: Line position -> why it waits, or why it can never be served.
    why: dict[int, str] = field(default_factory=dict)
    split_lines: list[int] = field(default_factory=list)
    #: A sentence about the whole order (why it is held or back-ordered).
    headline: str | None = None
    #: How the look-ahead moved the plan off the cheapest one for this order alone, if it did.
    lookahead: str | None = None


def _waiting(ctx: _Context, hold: bool, why: dict[int, str], cause: str) -> _Verdict:
    """Nothing ships now: every line waits, held (ship-complete, hold_for_stock) or back-ordered."""
    everything = {line.pos: line.quantity for line in ctx.lines}
    if not hold:
        return _Verdict(
            PlanOutcome.BACKORDER, backordered=everything, why=why, headline=f"Back-ordered: {cause}."
        )
    if ctx.order.ship_complete:
        headline = f"Held for stock: the order ships complete from one node, and {cause}."
    else:
        headline = f"Held for stock (policy hold_for_stock): {cause}."
    return _Verdict(PlanOutcome.HOLD_FOR_STOCK, backordered=everything, why=why, headline=headline)


def _decide_loads(ctx: _Context, cands: list[_Candidate], exact: bool) -> _Verdict:
    order, policy = ctx.order, ctx.policy
    hold = order.ship_complete or policy.backorder_policy == "hold_for_stock"
    if ctx.dest.blocked is not None:
        return _waiting(ctx, hold, {}, f"nothing can be planned while the {ctx.dest.blocked}")
    # Ship-complete means one shipment: every line from the same node.
    max_shipments = 1 if order.ship_complete else policy.max_shipments
    prepared = _prepare(ctx, cands, max_shipments, allow_backorder=not hold)
    if hold and prepared.short:
        return _waiting(ctx, hold, prepared.short_why, _shortage_cause(ctx, prepared.short))
    if not hold and len(prepared.short) == len(ctx.lines) and not prepared.problem.loads:
        return _waiting(ctx, hold, prepared.short_why, "no eligible node has stock of any line")
    assign = _search(prepared.problem, exact)
    if not hold and assign is not None and prepared.split_lines and None in assign:
        prepared, assign = _fewest_left_behind(ctx, cands, max_shipments, exact, prepared, assign)
    problem = prepared.problem
    lookahead = None if assign is None or problem.extra is None else _lookahead_note(problem, assign, exact)
    if assign is None:
        cause = (
            "no node has every line in full"
            if order.ship_complete
            else f"no plan within max_shipments={max_shipments} fills every line"
        )
        return _waiting(ctx, hold, {}, cause)
    loads = {k: _Load(list(load.items), load.weight, load.mask) for k, load in problem.loads.items()}
    short, why = dict(prepared.short), dict(prepared.short_why)
    for line, k in zip(problem.lines, assign, strict=True):
        if k is None:
            short[line.pos] = line.quantity
            why[line.pos] = f"no plan within max_shipments={max_shipments} could take it"
        else:
            loads.setdefault(k, _Load([], 0.0, 0)).add(line, line.quantity)
    if not short:
        outcome = PlanOutcome.SHIP
    elif not loads:
        return _waiting(ctx, hold, why, "no eligible node can ship any line now")
    else:
        outcome = PlanOutcome.PARTIAL
    return _Verdict(
        outcome,
        loads=loads,
        backordered=short,
        why=why,
        split_lines=prepared.split_lines,
        lookahead=lookahead,
    )


def _fewest_left_behind(
    ctx: _Context,
    cands: list[_Candidate],
    max_shipments: int,
    exact: bool,
    prepared: _Prepared,
    assign: list[int | None],
) -> tuple[_Prepared, list[int | None]]:
    """Lines no node holds in full are spread before the search, and may take shipments that whole
    lines then lack (3 shipments for 3 units of one line; a 2-unit line left behind). Let them
    open fewer nodes, down to none, and keep the plan that leaves the fewest units behind, then
    the cheapest; the first plan when none is better."""

    def score(candidate: _Prepared, found: list[int | None]) -> float:
        return candidate.problem.objective(found) + _BACKORDER_PENALTY * sum(candidate.short.values())

    best = (score(prepared, assign), prepared, assign)
    for budget in range(len(prepared.problem.loads) - 1, -1, -1):
        trial = _prepare(ctx, cands, max_shipments, allow_backorder=True, split_budget=budget)
        found = _search(trial.problem, exact)
        if found is not None and (cost := score(trial, found)) < best[0] - _EPS:
            best = (cost, trial, found)
    return best[1], best[2]


def _lookahead_note(problem: _Problem, assign: list[int | None], exact: bool) -> str | None:
    """One sentence when the plan differs from the one the search makes without look-ahead, else None.

    The search runs again without the look-ahead term (only for orders where some option has a
    price): the sentence names the first line that moved, the node that kept its units and the
    prices, and what each plan costs now.
    """
    assert problem.extra is not None
    myopic = replace(problem, extra=None)
    cheapest = _search(myopic, exact)
    if cheapest is None or cheapest == assign:
        return None
    moved = next(
        (j for j, (k, m) in enumerate(zip(assign, cheapest, strict=True)) if k != m and m is not None), None
    )
    if moved is None:
        return None
    line, kept, chosen = problem.lines[moved], cheapest[moved], assign[moved]
    assert kept is not None
    kept_id = problem.cands[kept].node_id
    kept_price = problem.extra[moved].get(kept, 0.0) / line.quantity
    if chosen is None:
        instead = "it waits instead"
    else:
        chosen_price = problem.extra[moved].get(chosen, 0.0) / line.quantity
        instead = f"it ships from {problem.cands[chosen].node_id} instead ({chosen_price:.2f} there)"
    said = (
        f"Look-ahead: {kept_id} kept its {line.sku} for later orders it serves best (look-ahead cost "
        f"{kept_price:.2f} per unit there), so {instead}"
    )
    if None in assign or None in cheapest:
        return said + "."  # a back-order's search penalty is no cost to quote
    return (
        f"{said}; the cheapest plan for this order alone would have cost "
        f"{myopic.objective(cheapest):.2f}, this one {myopic.objective(assign):.2f}."
    )


def _shortage_cause(ctx: _Context, short: Mapping[int, int]) -> str:
    parts = [f"{ctx.lines[pos].sku} is short by {units}" for pos, units in sorted(short.items())]
    return _join(parts)


def decide(
    order: OrderCreated,
    *,
    network: NetworkView,
    stock: StockView,
    capacity_used: Mapping[str, int],
    policy: Policy,
    now: datetime,
    sequence: int = 1,
    plan_version: int = 1,
    attempt: int = 0,
    excluded_nodes: frozenset[str] = frozenset(),
    risk: RoutingRisk = NO_RISK,
    opportunity: Mapping[tuple[str, str], float] = NO_OPPORTUNITY,
    verdicts: bool = True,
    _force_heuristic: bool = False,
) -> PlanDecided:
    """Decide where each line of `order` is fulfilled, by which carrier service, and why.

    `stock` is what each node can promise now; `capacity_used` the shipments
    already planned per node on the day a shipment from it would leave (`NetworkView.load_on_ship_dates`);
    `now` an aware datetime (it fixes cut-offs, dates and `decided_at`). The same inputs always
    give the same plan.
    `opportunity`: look-ahead prices per unit by (node_id, sku) (`orchestrator.domain.lookahead`),
    used when `policy.lookahead.enabled`: each unit the search places at a node costs
    `policy.lookahead.weight` x its price more. Empty (the default): the cheapest plan for this
    order alone. `total_cost` never includes the look-ahead term.
    `verdicts=False` leaves out the plan's per-node `candidates` (the explanation still names
    nodes and their reasons): a promise shows none, and they are a third of a decision's time.
    `_force_heuristic` runs the greedy search whatever the order's size (for tests).
    """
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime: cut-offs are read in each node's time zone")
    for line in order.lines:
        if line.quantity < 1:
            # validate rejects such orders; planning one would write a SkuLine the contract refuses.
            raise ValueError(f"line {line.line_id} of order {order.order_id} has quantity {line.quantity}")
    dest_or_why = _destination(order, network, policy)
    dest = dest_or_why if isinstance(dest_or_why, _Destination) else _NOWHERE
    multiplier = policy.priority_late_multiplier if order.priority else 1.0
    lines = _digest_lines(order, policy)
    ctx = _Context(
        order=order,
        network=network,
        stock=stock,
        capacity_used=capacity_used,
        policy=policy,
        now=now,
        excluded=excluded_nodes,
        attempt=attempt,
        dest=dest,
        lines=lines,
        late_rate=policy.late_penalty_per_day * multiplier,
        quotes=_quotes(network.services_available(now), dest),
        rank_bonuses=policy.rank_bonuses(),
        classes=_handling_classes(lines),
        excluded_kinds=policy.excluded_kinds(order.channel),
        ship_from_store=policy.ship_from_store.allows(order.channel),
        risk=risk,
    )
    lookahead = policy.lookahead
    if opportunity and lookahead.enabled and lookahead.weight > 0:
        ctx.opportunity = opportunity
        ctx.lookahead_weight = lookahead.weight
    cands: list[_Candidate] = []
    if isinstance(dest_or_why, str):
        unservable = {line.pos: dest_or_why for line in ctx.lines}
    else:
        cands = _candidates(ctx)
        unservable = _unservable_lines(ctx, cands)
    if unservable:
        verdict = _Verdict(PlanOutcome.UNFULFILLABLE, why=unservable)
    else:
        exact = not _force_heuristic and len(order.lines) <= policy.exact_search_max_lines
        verdict = _decide_loads(ctx, cands, exact)
    return _plan(ctx, cands, verdict, sequence=sequence, plan_version=plan_version, verdicts=verdicts)


# ---------------------------------------------------------------------------
# The plan, written up
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Shipment:
    cand: _Candidate
    items: list[tuple[_Line, int]]
    rate: _Rate
    weight_kg: Decimal
    cost: float


def _shipments(ctx: _Context, cands: list[_Candidate], loads: Mapping[int, _Load]) -> list[_Shipment]:
    """The shipments of the plan, ordered by their first line, then node id."""
    shipments = []
    for k, load in loads.items():
        cand = cands[k]
        items = [(ctx.lines[pos], units) for pos, units in sorted(load.items)]
        weight_kg = sum((line.unit_weight_kg * units for line, units in items), Decimal(0))
        rate = cand.best_rate(load.weight, load.mask)
        shipments.append(_Shipment(cand, items, rate, weight_kg, cand.cost(load.weight, load.mask)))
    shipments.sort(key=lambda s: (s.items[0][0].pos, s.cand.node_id))
    return shipments


def _planned(plan_id: str, index: int, shipment: _Shipment) -> dict[str, object]:
    """A PlannedShipment's fields (the plan is validated in one go, see `_plan`)."""
    cand, rate = shipment.cand, shipment.rate
    if rate.quote is None:
        # PlannedShipment needs a level and there is none for a hand-over; standard reads least wrong.
        carrier, level = IN_STORE_PICKUP, ServiceLevel.STANDARD
    else:
        service = rate.quote.service
        carrier = CarrierAssignment(carrier=service.carrier, service_id=service.service_id)
        level = service.service_level
    return {
        "shipment_id": f"{plan_id}-s{index}-{cand.node_id}",
        "node_id": cand.node_id,
        "lines": [
            {"line_id": line.line_id, "sku": line.sku, "quantity": units} for line, units in shipment.items
        ],
        "carrier": carrier,
        "service_level": level,
        "ship_by": cand.ship_by,
        "promised_delivery_date": rate.delivery,
        "distance_km": round(cand.distance_km, 1),
        "shipping_cost": rate.shipping_cost(shipment.weight_kg),
        "cost": round(shipment.cost, 4),
        "capacity": {"day": cand.ships_on, "shipments": cand.capacity},
    }


def _alone_cost(ctx: _Context, cand: _Candidate) -> float | None:
    """What the node would cost shipping, alone, everything it can ship now."""
    if not cand.usable or not cand.serves:
        return None
    weight = 0.0
    mask = 0
    for pos, units in cand.serves.items():
        weight += ctx.lines[pos].unit_weight * units
        mask |= ctx.lines[pos].mask
    cost = cand.cost(weight, mask)
    return None if cost == math.inf else round(cost, 4)


def _reason_codes(cand: _Candidate) -> list[str]:
    """The node's reason codes in REASON_ORDER."""
    codes = list(cand.reasons)
    if len(codes) > 1:
        codes.sort(key=_REASON_RANK.__getitem__)
    return codes


def _candidate_verdict(ctx: _Context, cand: _Candidate) -> dict[str, object]:
    """A CandidateVerdict's fields (the plan is validated in one go, see `_plan`)."""
    return {
        "node_id": cand.node_id,
        "eligible": cand.usable and bool(cand.serves),
        "reasons": [{"code": code, "message": cand.reason_message(code)} for code in _reason_codes(cand)],
        "lines": [ctx.lines[pos].line_id for pos in sorted(cand.serves)],
        "best_cost": _alone_cost(ctx, cand),
    }


def _plan(
    ctx: _Context,
    cands: list[_Candidate],
    verdict: _Verdict,
    *,
    sequence: int,
    plan_version: int,
    verdicts: bool = True,
) -> PlanDecided:
    order = ctx.order
    plan_id = f"{order.order_id}-p{plan_version}"
    shipments = _shipments(ctx, cands, verdict.loads)
    total = sum(s.cost for s in shipments) + ctx.policy.split_cost * max(0, len(shipments) - 1)
    # One validation of plain data is several times cheaper than building the nested models one
    # by one (a plan has a verdict for every node), and the contract still checks every field.
    return PlanDecided.model_validate(
        {
            "order_id": order.order_id,
            "plan_id": plan_id,
            "plan_version": plan_version,
            "sequence": sequence,
            "order": order,
            "outcome": verdict.outcome,
            "shipments": [_planned(plan_id, i, s) for i, s in enumerate(shipments, start=1)],
            "backordered": [
                {"line_id": ctx.lines[pos].line_id, "sku": ctx.lines[pos].sku, "quantity": units}
                for pos, units in sorted(verdict.backordered.items())
            ],
            "total_cost": round(total, 4),
            "policy_version": ctx.policy.version,
            "candidates": [_candidate_verdict(ctx, cand) for cand in cands] if verdicts else [],
            "explanation": [_text(s) for s in _explain(ctx, cands, verdict, shipments, total)],
            "decided_at": ctx.now,
            "excluded_nodes": sorted(ctx.excluded),
            "attempt": ctx.attempt,
        }
    )


# ---------------------------------------------------------------------------
# The explanation
# ---------------------------------------------------------------------------

#: Up to this many unused nodes are explained one by one; more are counted by reason.
_NAMED_UNUSED = 3


def _join(parts: Sequence[str]) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _text(sentence: str) -> str:
    """A sentence that fits the contract's Text (at most 2000 characters)."""
    return sentence if len(sentence) <= _MAX_TEXT else sentence[: _MAX_TEXT - 1] + "…"


def _shipment_sentence(ctx: _Context, shipment: _Shipment) -> str:
    labels = [line.label(units) for line, units in shipment.items]
    one = len(labels) == 1
    subject = ("Line " if one else "Lines ") + _join(labels)
    node_id = shipment.cand.node_id
    arriving = shipment.rate.delivery.isoformat()
    promised = ctx.order.promised_delivery_date.isoformat()
    quote = shipment.rate.quote
    if quote is None:
        verb = "is" if one else "are"
        return f"{subject} {verb} ready for pickup at {node_id} on {arriving} (promised {promised})."
    to = "" if ctx.dest.collect_store_id is None else f" to {ctx.dest.collect_store_id}"
    return (
        f"{subject} {'ships' if one else 'ship'} from {node_id}{to} by {quote.service.service_id}, "
        f"arriving {arriving} (promised {promised})."
    )


def _serves_everything(ctx: _Context, cand: _Candidate) -> bool:
    serves = cand.serves
    # Most nodes serve one line or none: the count settles them without looking at each line.
    if not cand.usable or len(serves) < len(ctx.lines):
        return False
    return all(serves.get(line.pos, 0) >= line.quantity for line in ctx.lines)


def _split_sentence(ctx: _Context, cands: list[_Candidate], shipments: list[_Shipment], total: float) -> str:
    count = len(shipments)
    if ctx.dest.pin_collect_lines and any(s.rate.quote is None for s in shipments):
        store = ctx.dest.collect_store_id
        return (
            f"Split into {count} shipments: lines in stock at {store} are picked up there, "
            "the rest is sent to it."
        )
    singles = []
    for cand in cands:
        alone = _alone_cost(ctx, cand) if _serves_everything(ctx, cand) else None
        if alone is not None:
            singles.append((alone, cand.node_id))
    if not singles:
        return f"Split into {count} shipments: no single node had all lines."
    alone, node_id = min(singles)
    return (
        f"Split into {count} shipments: cheaper than one shipment from {node_id} "
        f"({total:.2f} against {alone:.2f})."
    )


def _line_sentences(ctx: _Context, verdict: _Verdict, shipments: list[_Shipment]) -> list[str]:
    sentences = []
    for pos in verdict.split_lines:
        nodes = [s.cand.node_id for s in shipments if any(line.pos == pos for line, _ in s.items)]
        line = ctx.lines[pos]
        if len(nodes) > 1:
            sentences.append(
                f"Line {line.label()} is split across {_join(nodes)}: "
                f"no single node had {line.quantity} units."
            )
    for pos, why in sorted(verdict.why.items()):
        line = ctx.lines[pos]
        if verdict.outcome is PlanOutcome.UNFULFILLABLE:
            sentences.append(f"Line {line.label()} can never be served: {why}.")
        elif verdict.outcome is PlanOutcome.PARTIAL:
            units = verdict.backordered.get(pos, 0)
            sentences.append(f"Line {line.label(units)} is back-ordered: {why}.")
        else:
            sentences.append(f"Line {line.label()} waits: {why}.")
    return sentences


def _unused_sentences(ctx: _Context, cands: list[_Candidate], shipments: list[_Shipment]) -> list[str]:
    used = {s.cand.node_id for s in shipments}
    unused = [c for c in cands if c.node_id not in used and c.reasons]
    sentences = []
    if len(unused) <= _NAMED_UNUSED:
        for cand in unused:
            messages = [cand.reason_message(code) for code in _reason_codes(cand)]
            sentences.append(f"{cand.node_id} was not used: {'; '.join(messages)}.")
    else:
        counts: dict[str, int] = {}
        for cand in unused:
            first = min(cand.reasons, key=_REASON_RANK.__getitem__)  # the first of `_reason_codes`
            counts[first] = counts.get(first, 0) + 1
        parts = [
            f"{_CODE_PHRASES[code]} ({n})" for code, n in sorted(counts.items(), key=lambda i: (-i[1], i[0]))
        ]
        sentences.append(f"{len(unused)} other nodes were not used: {_join(parts)}.")
    if len(shipments) == 1 and ctx.dest.collect_store_id is None:
        alternatives = [
            (alone, cand.node_id)
            for cand in cands
            if cand.node_id not in used and _serves_everything(ctx, cand)
            for alone in [_alone_cost(ctx, cand)]
            if alone is not None
        ]
        if alternatives:
            alone, node_id = min(alternatives)
            sentences.append(f"Next best single node: {node_id} at {alone:.2f}.")
    return sentences


def _explain(
    ctx: _Context, cands: list[_Candidate], verdict: _Verdict, shipments: list[_Shipment], total: float
) -> list[str]:
    sentences = [] if verdict.headline is None else [verdict.headline]
    sentences += [_shipment_sentence(ctx, s) for s in shipments]
    if len(shipments) > 1:
        sentences.append(_split_sentence(ctx, cands, shipments, total))
    if verdict.lookahead is not None:
        sentences.append(verdict.lookahead)
    sentences += _line_sentences(ctx, verdict, shipments)
    if cands:
        sentences += _unused_sentences(ctx, cands, shipments)
    if shipments:
        sentences.append(f"Total cost {total:.2f} under policy {ctx.policy.version}.")
    else:
        sentences.append(f"Decided under policy {ctx.policy.version}.")
    return sentences


__all__ = [
    "IN_STORE_PICKUP",
    "NO_OPPORTUNITY",
    "REASON_ORDER",
    "TIMES",
    "StockView",
    "after_working_days",
    "decide",
]
