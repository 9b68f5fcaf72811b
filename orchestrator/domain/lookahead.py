"""Sourcing that prices the future: what one unit of stock at a node is worth to the orders to come.

The myopic plan is the cheapest for the order in hand. It can take the last
units of a node that a later order, from a region only that node serves
well, will need; that order then ships from far away, splits, or waits.
Acimovic and Graves (MSOM 2015) price this: forecast the demand of the
coming period by region, solve the transportation problem that serves it
from the stock on hand, and charge each unit taken from a node the dual
price of the node's stock (what one unit fewer there would cost the
forecast demand). A node with stock to spare gets 0; a node whose last units
the regions it serves best will need gets the extra it would cost to serve
them from the next best node (or `unmet_cost`, when no stock is left to
serve them at all).

Three pure steps, no I/O (decide-node's `LookaheadView` and `orchestrator
simulate` feed them):

1. `forecast_demand`: recent sales (where each line went, which SKU, how
   many units) become units per SKU and region over the horizon. A region is
   a cell of the latitude/longitude grid (`region_of`), not a postcode area:
   every address of the contract has a position, in every country, while
   postcode systems differ from country to country (GB outward codes, US
   ZIPs, countries without postcodes) and their areas range from a few
   streets to a county; the carriers' cost grows with distance, which a grid
   cell bounds. Per-SKU counts per region are far too sparse to forecast
   (a few sales of a SKU a day, spread over dozens of regions), so a SKU's
   demand is its recent rate, shared over the regions as all recent units
   were: where customers live is much the same whatever they buy.
2. `unit_costs`: the cost of sending one unit from each node that ships
   parcels to each region: the node's handling, plus the cheapest carrier
   service that reaches the region (base, per kg for the policy's default
   unit weight, the distance band or zone surcharge). One unit alone is the
   worst case of the real per-shipment cost; the differences between nodes,
   which is what the prices are made of, are the same either way.
3. `opportunity_costs`: per SKU, the transportation LP (HiGHS): supply
   is each node's available units, demand the forecast units per region, the
   cost per unit as above, and demand no stock serves costs `unmet_cost`.
   The price of a unit at a node is minus the dual value of the node's supply
   row. SKUs are independent, so each is a small LP of its own.

The result is an immutable mapping (node_id, sku) -> price per unit; missing
keys price 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType

import highspy
import numpy as np

from orchestrator.contract.common import HomeDelivery, NodeCapability, NodeKind, ShipToStore, StorePickup
from orchestrator.contract.network import CarrierServiceUpserted, NodeUpserted, ZoneTableCost
from orchestrator.contract.orders import OrderCreated
from orchestrator.domain.geo import haversine_km
from orchestrator.domain.network import NetworkView
from orchestrator.domain.policy import Policy
from orchestrator.domain.sourcing import NO_OPPORTUNITY

#: (node_id, sku) -> look-ahead price of one unit there; missing keys mean 0.
OpportunityCosts = Mapping[tuple[str, str], float]


# Prices below this are solver noise, not scarcity.
_TINY = 1e-6


@dataclass(frozen=True, slots=True)
class Sale:
    """Units of one SKU a recent order sent to one place."""

    latitude: float
    longitude: float
    postal_code: str
    country: str
    sku: str
    units: int
    #: The order ships complete or not at all (one node must have every line).
    ship_complete: bool = False


@dataclass(frozen=True, slots=True)
class Region:
    """A cell of the grid, located where its recent demand went."""

    region_id: str
    country: str
    #: The demand-weighted centre of the cell's sales: coastal cells are not priced from the sea.
    latitude: float
    longitude: float
    #: The cell's most frequent postcode, for carriers priced by postal zone.
    postal_code: str


@dataclass(frozen=True, slots=True)
class Forecast:
    """Units expected per SKU and region over the horizon."""

    regions: tuple[Region, ...]
    #: sku -> units per region, in the order of `regions`.
    demand: Mapping[str, tuple[float, ...]]


def region_of(country: str, latitude: float, longitude: float, cell_degrees: float) -> str:
    """The grid cell of a position, e.g. `GB:52:-2` for 1-degree cells (south-west corner, in cells)."""
    return f"{country}:{math.floor(latitude / cell_degrees)}:{math.floor(longitude / cell_degrees)}"


def sales_of(order: OrderCreated, network: NetworkView) -> list[Sale]:
    """Where each customer line of `order` goes: the customer's address, or the store it is collected at.

    Lines the policy added (samples, inserts) are not demand the customer made; they are left out.
    """
    delivery = order.delivery
    address = order.ship_to
    if isinstance(delivery, StorePickup | ShipToStore):
        store_id = delivery.pickup_store_id if isinstance(delivery, StorePickup) else delivery.store_id
        store = network.nodes.get(store_id)
        address = store.location if store is not None else address
    elif not isinstance(delivery, HomeDelivery):  # pragma: no cover - the contract has no other kind
        return []
    if address is None:
        return []
    return [
        Sale(
            address.latitude,
            address.longitude,
            address.postal_code,
            address.country,
            line.sku,
            line.quantity,
            order.ship_complete,
        )
        for line in order.lines
        if line.addition is None
    ]


def forecast_demand(
    sales: Iterable[Sale], *, observed_hours: float, horizon_hours: float, cell_degrees: float
) -> Forecast:
    """Demand per SKU and region over the next `horizon_hours`, from the `sales` of the last `observed_hours`.

    A SKU's units scale from the window to the horizon; they are spread over the regions in the
    proportions of all units sold (see the module doc for why not per SKU).
    """
    if observed_hours <= 0 or horizon_hours <= 0 or cell_degrees <= 0:
        raise ValueError("observed_hours, horizon_hours and cell_degrees must be positive")
    per_sku: dict[str, int] = {}
    per_region: dict[str, int] = {}
    # region -> [country, sum of lat x units, sum of lon x units, postcode -> units]
    places: dict[str, tuple[str, list[float], dict[str, int]]] = {}
    for sale in sales:
        if sale.units <= 0:
            continue
        region_id = region_of(sale.country, sale.latitude, sale.longitude, cell_degrees)
        per_sku[sale.sku] = per_sku.get(sale.sku, 0) + sale.units
        per_region[region_id] = per_region.get(region_id, 0) + sale.units
        country, sums, codes = places.setdefault(region_id, (sale.country, [0.0, 0.0], {}))
        sums[0] += sale.latitude * sale.units
        sums[1] += sale.longitude * sale.units
        codes[sale.postal_code] = codes.get(sale.postal_code, 0) + sale.units
    total = sum(per_region.values())
    if total == 0:
        return Forecast((), MappingProxyType({}))
    ids = sorted(per_region)
    regions = []
    for region_id in ids:
        country, sums, codes = places[region_id]
        units = per_region[region_id]
        postal_code = min(codes, key=lambda code: (-codes[code], code))
        regions.append(Region(region_id, country, sums[0] / units, sums[1] / units, postal_code))
    shares = [per_region[region_id] / total for region_id in ids]
    scale = horizon_hours / observed_hours
    demand = {sku: tuple(units * scale * share for share in shares) for sku, units in sorted(per_sku.items())}
    return Forecast(tuple(regions), MappingProxyType(demand))


def shipping_nodes(network: NetworkView, policy: Policy) -> list[NodeUpserted]:
    """Nodes that can send parcels to customers now, sorted by id (the columns of the LPs)."""
    nodes = []
    for _, node in sorted(network.nodes.items()):
        if not node.open:
            continue
        if node.kind is NodeKind.STORE and (
            NodeCapability.SHIP_FROM_STORE not in node.capabilities or not policy.ship_from_store.enabled
        ):
            # Such a store's stock only leaves by pickup at the store itself, which the rules fix.
            continue
        nodes.append(node)
    return nodes


def _zone_surcharge(service: CarrierServiceUpserted, region: Region) -> Decimal | None:
    """The surcharge of the zone with the longest postal prefix matching the region's postcode."""
    cost = service.cost
    assert isinstance(cost, ZoneTableCost)
    postcode = region.postal_code.replace(" ", "").upper()
    best: tuple[int, Decimal] | None = None
    for zone in cost.zones:
        if zone.country != region.country:
            continue
        for prefix in [p.replace(" ", "").upper() for p in zone.postal_prefixes] or [""]:
            if postcode.startswith(prefix) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), zone.surcharge)
    return None if best is None else best[1]


def _service_cost(service: CarrierServiceUpserted, km: float, region: Region, weight: float) -> float:
    """What the service charges for one unit over `km` to the region (inf: it does not go there)."""
    if region.country not in service.countries:
        return math.inf
    cost = service.cost
    if isinstance(cost, ZoneTableCost):
        surcharge = _zone_surcharge(service, region)
    else:
        surcharge = next((band.surcharge for band in cost.bands if km <= band.max_km), None)
    if surcharge is None:
        return math.inf
    return float(cost.base + surcharge) + float(cost.per_kg) * weight


def unit_costs(
    network: NetworkView,
    nodes: Sequence[NodeUpserted],
    regions: Sequence[Region],
    policy: Policy,
    now: datetime,
) -> np.ndarray:
    """Cost of one unit from each node to each region (rows: `nodes`, columns: `regions`; inf: no service).

    Any service level counts: most demand is standard delivery, and which node is nearer does not
    depend on the speed. Weight: the policy's default unit weight (the per-kg part is the same from
    every node, so it hardly moves the prices).
    """
    services = network.services_available(now)
    weight = policy.default_unit_weight_kg
    costs = np.full((len(nodes), len(regions)), math.inf)
    for i, node in enumerate(nodes):
        here = node.location
        handling = policy.handling_cost(node.kind)
        for j, region in enumerate(regions):
            km = haversine_km(here.latitude, here.longitude, region.latitude, region.longitude)
            best = min((_service_cost(s, km, region, weight) for s in services), default=math.inf)
            costs[i, j] = handling + best
    return costs


def _transport_prices(
    h: highspy.Highs, supply: np.ndarray, demand: np.ndarray, costs: np.ndarray, unmet_cost: float
) -> np.ndarray:
    """Dual prices of the supply rows of one SKU's transportation LP (>= 0, one per node).

    Columns: x[i, j] (units from node i to region j; fixed at 0 where no service goes), then
    unmet[j]. Rows: per region, what arrives plus what is unmet equals the forecast; per node,
    what leaves is at most its supply.
    """
    n, r = costs.shape
    arcs = n * r
    reachable = np.isfinite(costs).reshape(-1)
    lp = highspy.HighsLp()
    lp.num_col_ = arcs + r
    lp.num_row_ = r + n
    lp.col_cost_ = np.concatenate([np.where(reachable, costs.reshape(-1), 0.0), np.full(r, unmet_cost)])
    lp.col_lower_ = np.zeros(arcs + r)
    lp.col_upper_ = np.concatenate(
        [np.where(reachable, highspy.kHighsInf, 0.0), np.full(r, highspy.kHighsInf)]
    )
    lp.row_lower_ = np.concatenate([demand, np.full(n, -highspy.kHighsInf)])
    lp.row_upper_ = np.concatenate([demand, supply])
    index = np.empty(2 * arcs + r, dtype=np.int32)
    index[0 : 2 * arcs : 2] = np.tile(np.arange(r, dtype=np.int32), n)  # x[i, j] in region row j
    index[1 : 2 * arcs : 2] = r + np.repeat(np.arange(n, dtype=np.int32), r)  # ... and in node row i
    index[2 * arcs :] = np.arange(r, dtype=np.int32)  # unmet[j] in region row j
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.concatenate(
        [np.arange(0, 2 * arcs + 1, 2, dtype=np.int32), 2 * arcs + np.arange(1, r + 1, dtype=np.int32)]
    )
    lp.a_matrix_.index_ = index
    lp.a_matrix_.value_ = np.ones(2 * arcs + r)
    h.passModel(lp)
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:  # pragma: no cover - always feasible
        raise RuntimeError(f"transportation LP not solved: {h.modelStatusToString(h.getModelStatus())}")
    # The dual of a supply row is what one more unit there saves (<= 0); the price is its opposite.
    duals: np.ndarray = -np.asarray(h.getSolution().row_dual[r:], dtype=float)
    prices: np.ndarray = np.maximum(duals, 0.0)
    return prices


def opportunity_costs(
    forecast: Forecast,
    supply: Mapping[tuple[str, str], int],
    nodes: Sequence[NodeUpserted],
    costs: np.ndarray,
    *,
    unmet_cost: float,
) -> OpportunityCosts:
    """The look-ahead price of one unit of each SKU at each node (>= 0; missing keys price 0).

    `supply` holds the units available per (node_id, sku); `nodes` and `costs` come from
    `shipping_nodes` and `unit_costs` for the forecast's regions.
    """
    if not forecast.regions or not nodes:
        return NO_OPPORTUNITY
    if costs.shape != (len(nodes), len(forecast.regions)):
        raise ValueError(f"costs are {costs.shape}, expected {(len(nodes), len(forecast.regions))}")
    node_ids = [node.node_id for node in nodes]
    prices: dict[tuple[str, str], float] = {}
    h: highspy.Highs | None = None
    for sku, units in forecast.demand.items():
        total = sum(units)
        held = [(i, supply.get((node_id, sku), 0)) for i, node_id in enumerate(node_ids)]
        held = [(i, a) for i, a in held if a > 0]
        if total <= 0 or not held or all(a >= total for _, a in held):
            # Every node holding the SKU could serve the whole forecast alone: no unit is scarce
            # anywhere (0 for all is an optimal dual), and the LP need not be solved.
            continue
        rows = [i for i, _ in held]
        if h is None:
            h = highspy.Highs()  # type: ignore[no-untyped-call]
            h.setOptionValue("output_flag", False)
        found = _transport_prices(
            h,
            np.array([float(a) for _, a in held]),
            np.array(units, dtype=float),
            costs[rows, :],
            unmet_cost,
        )
        for i, price in zip(rows, found, strict=True):
            if price > _TINY:
                prices[(node_ids[i], sku)] = round(float(price), 6)
    return MappingProxyType(prices)


def ship_complete_prices(
    sales: Iterable[Sale],
    supply: Mapping[tuple[str, str], int],
    nodes: Sequence[NodeUpserted],
    *,
    observed_hours: float,
    horizon_hours: float,
    hold_cost: float,
    lines: int,
) -> dict[tuple[str, str], float]:
    """What a unit at a node is worth to the ship-complete orders to come (>= 0; missing keys 0).

    The transportation prices see units, not orders: a ship-complete order needs one node with
    every one of its lines, and an ordinary order that takes the last units of one SKU at the
    only node holding the rest breaks it whole, though other nodes have that SKU to spare. So:

    - a node fills a coming ship-complete order with the chance that it holds the order's other
      `lines - 1` SKUs, each drawn as demand draws SKUs: the share of recent units its SKUs
      make up, to the power `lines - 1`;
    - a unit of SKU s at node n is needed when n can fill the order and no other node holding s
      can (their chances taken as independent);
    - it is needed as often as the ship-complete share of s's demand over the horizon takes
      n's units of s (at most all of them);
    - and an order held costs `hold_cost` per unit, for `lines` units.

    A heuristic, not an optimum (see the README for what it closes); `nodes` are the shipping
    nodes, whose stock alone ships parcels.
    """
    if hold_cost <= 0 or observed_hours <= 0 or horizon_hours <= 0:
        return {}
    per_sku: dict[str, int] = {}
    units = complete = 0
    for sale in sales:
        if sale.units <= 0:
            continue
        per_sku[sale.sku] = per_sku.get(sale.sku, 0) + sale.units
        units += sale.units
        complete += sale.units if sale.ship_complete else 0
    if complete == 0:
        return {}
    shipping = {node.node_id for node in nodes}
    held: dict[str, dict[str, int]] = {}
    for (node_id, sku), available in sorted(supply.items()):
        if available > 0 and node_id in shipping and sku in per_sku:
            held.setdefault(node_id, {})[sku] = available
    fills = {
        node_id: (sum(per_sku[sku] for sku in skus) / units) ** (lines - 1) for node_id, skus in held.items()
    }
    holders: dict[str, list[str]] = {}
    for node_id, skus in held.items():
        for sku in skus:
            holders.setdefault(sku, []).append(node_id)
    scale = horizon_hours / observed_hours * complete / units
    prices: dict[tuple[str, str], float] = {}
    for sku, at in holders.items():
        expected = per_sku[sku] * scale
        misses = [1.0 - fills[node_id] for node_id in at]
        # The chance that no other holder fills it: the product of the others' misses, without
        # dividing by this node's own (a node holding every SKU misses with chance 0).
        before = [1.0]
        for miss in misses[:-1]:
            before.append(before[-1] * miss)
        after = 1.0
        for k in range(len(at) - 1, -1, -1):
            node_id = at[k]
            only = fills[node_id] * before[k] * after
            after *= misses[k]
            price = hold_cost * lines * only * min(1.0, expected / held[node_id][sku])
            if price > _TINY:
                prices[(node_id, sku)] = round(price, 6)
    return prices


def lookahead_prices(
    sales: Iterable[Sale],
    supply: Mapping[tuple[str, str], int],
    *,
    network: NetworkView,
    policy: Policy,
    now: datetime,
    observed_hours: float,
) -> OpportunityCosts:
    """The three steps at once, with the policy's `lookahead` settings: what decide-node and simulate call.

    `sales` are the customer lines of the orders placed in the last `observed_hours` (at most the
    policy's window; less while there is less history), `supply` the units available now.
    """
    settings = policy.lookahead
    sales = list(sales)
    forecast = forecast_demand(
        sales,
        observed_hours=observed_hours,
        horizon_hours=settings.horizon_hours,
        cell_degrees=settings.region_cell_degrees,
    )
    if not forecast.regions:
        return NO_OPPORTUNITY
    nodes = shipping_nodes(network, policy)
    costs = unit_costs(network, nodes, forecast.regions, policy, now)
    prices = opportunity_costs(forecast, supply, nodes, costs, unmet_cost=settings.unmet_cost)
    if settings.ship_complete_hold_cost <= 0:
        return prices
    protection = ship_complete_prices(
        sales,
        supply,
        nodes,
        observed_hours=observed_hours,
        horizon_hours=settings.horizon_hours,
        hold_cost=settings.ship_complete_hold_cost,
        lines=settings.ship_complete_lines,
    )
    if not protection:
        return prices
    merged = dict(prices)
    for key, price in protection.items():
        merged[key] = round(merged.get(key, 0.0) + price, 6)
    return MappingProxyType(merged)


__all__ = [
    "NO_OPPORTUNITY",
    "Forecast",
    "OpportunityCosts",
    "Region",
    "Sale",
    "forecast_demand",
    "lookahead_prices",
    "opportunity_costs",
    "region_of",
    "sales_of",
    "ship_complete_prices",
    "shipping_nodes",
    "unit_costs",
]
