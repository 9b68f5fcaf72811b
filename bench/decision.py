"""Speed and quality of the sourcing decision on a realistic UK network (no Kafka, no database).

    python -m bench.decision                 # 2,000 decisions
    python -m bench.decision -n 500 --seed 7
    python -m bench.decision --quick         # 200 decisions: a smoke test

The network is built from a seed, so every run decides the same orders: 5
DCs, a 3PL, 2 micro-fulfilment centres, 40 stores and 2 drop-ship vendors
(50 nodes) and six carrier services priced by distance bands. Orders have 5
lines. Only `decide` is timed; the orders are built beforehand.

Quality is read against two static baselines on the same orders, costed
under the same objective: the closest node that holds every line, and the
first node of a fixed ranking that does. Prints markdown tables and writes
bench-results/decision.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from decimal import Decimal
from pathlib import Path

from orchestrator import native
from orchestrator.contract.common import (
    Address,
    Channel,
    CustomerTier,
    HomeDelivery,
    NodeCapability,
    NodeKind,
    OrderLine,
    ProductLabel,
    ServiceLevel,
    StorePickup,
)
from orchestrator.contract.network import CarrierServiceUpserted, DistanceBand, DistanceBandCost, NodeUpserted
from orchestrator.contract.orders import OrderCreated
from orchestrator.contract.pipeline import PlanDecided, PlanOutcome
from orchestrator.domain.geo import haversine_km
from orchestrator.domain.network import NetworkView, network_from_events
from orchestrator.domain.policy import Policy, load_policy
from orchestrator.domain.sourcing import StockView, decide

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "bench-results" / "decision.json"
TARGET_P99_MS = 5.0

#: (town, postcode, latitude, longitude): where nodes stand and customers live.
TOWNS: tuple[tuple[str, str, float, float], ...] = (
    ("London", "EC1A 1BB", 51.5202, -0.0979),
    ("Birmingham", "B1 1AA", 52.4797, -1.9027),
    ("Manchester", "M1 3HE", 53.4772, -2.2353),
    ("Leeds", "LS1 4DY", 53.7997, -1.5492),
    ("Glasgow", "G1 1XQ", 55.8609, -4.2514),
    ("Edinburgh", "EH1 1YZ", 55.9533, -3.1883),
    ("Liverpool", "L1 8JQ", 53.4048, -2.9916),
    ("Bristol", "BS1 4DJ", 51.4545, -2.5879),
    ("Sheffield", "S1 2HE", 53.3811, -1.4701),
    ("Newcastle", "NE1 7RU", 54.9738, -1.6132),
    ("Nottingham", "NG1 5FS", 52.9536, -1.1505),
    ("Leicester", "LE1 5WW", 52.6369, -1.1398),
    ("Cardiff", "CF10 1EP", 51.4816, -3.1791),
    ("Southampton", "SO14 7DW", 50.9039, -1.4043),
    ("Brighton", "BN1 1AE", 50.8225, -0.1372),
    ("Plymouth", "PL1 1EA", 50.3714, -4.1422),
    ("Norwich", "NR2 1NH", 52.6309, 1.2974),
    ("Cambridge", "CB2 3QF", 52.2053, 0.1218),
    ("Oxford", "OX1 3BD", 51.7520, -1.2577),
    ("Reading", "RG1 1JX", 51.4543, -0.9781),
    ("Milton Keynes", "MK9 3ES", 52.0406, -0.7594),
    ("Northampton", "NN1 1DP", 52.2405, -0.9027),
    ("Coventry", "CV1 1GF", 52.4068, -1.5197),
    ("Stoke-on-Trent", "ST1 1HP", 53.0027, -2.1794),
    ("Derby", "DE1 2FS", 52.9225, -1.4746),
    ("Hull", "HU1 2AA", 53.7457, -0.3367),
    ("York", "YO1 7HH", 53.9590, -1.0815),
    ("Aberdeen", "AB10 1XG", 57.1497, -2.0943),
    ("Dundee", "DD1 1DB", 56.4620, -2.9707),
    ("Inverness", "IV1 1QX", 57.4778, -4.2247),
    ("Exeter", "EX1 1GE", 50.7184, -3.5339),
    ("Swansea", "SA1 3SN", 51.6214, -3.9436),
    ("Preston", "PR1 2HE", 53.7632, -2.7031),
    ("Carlisle", "CA3 8JH", 54.8925, -2.9329),
    ("Ipswich", "IP1 1AS", 52.0567, 1.1482),
    ("Peterborough", "PE1 1XP", 52.5695, -0.2405),
    ("Bournemouth", "BH1 1BQ", 50.7192, -1.8808),
    ("Middlesbrough", "TS1 2AZ", 54.5742, -1.2350),
    ("Gloucester", "GL1 1DD", 51.8642, -2.2382),
    ("Canterbury", "CT1 2HG", 51.2802, 1.0789),
    ("Lincoln", "LN1 1AA", 53.2307, -0.5406),
    ("Shrewsbury", "SY1 1QH", 52.7077, -2.7540),
)

#: (node id, town index): the DC network.
DCS = (("DC-LEEDS", 3), ("DC-DAVENTRY", 21), ("DC-BRISTOL", 7), ("DC-BELLSHILL", 4), ("DC-TRAFFORD", 2))
RANKING = ("DC-DAVENTRY", "DC-LEEDS", "DC-TRAFFORD", "DC-BRISTOL", "DC-BELLSHILL", "3PL-NORTHAMPTON")


def _address(name: str, town: int, rng: random.Random, jitter: float = 0.0) -> Address:
    city, postcode, lat, lon = TOWNS[town]
    return Address(
        name=name,
        line1=f"{rng.randint(1, 200)} High Street",
        city=city,
        postal_code=postcode,
        country="GB",
        latitude=round(lat + rng.uniform(-jitter, jitter), 4),
        longitude=round(lon + rng.uniform(-jitter, jitter), 4),
    )


def _node(
    node_id: str,
    kind: NodeKind,
    town: int,
    rng: random.Random,
    capabilities: tuple[NodeCapability, ...],
    capacity: int,
    cutoff: clock,
) -> NodeUpserted:
    return NodeUpserted(
        node_id=node_id,
        kind=kind,
        name=node_id.replace("-", " ").title(),
        location=_address(node_id, town, rng, jitter=0.05),
        capabilities=capabilities,
        daily_capacity=capacity,
        cutoff_local=cutoff,
        timezone="Europe/London",
        open=True,
    )


def build_nodes(rng: random.Random) -> list[NodeUpserted]:
    """50 nodes: 5 DCs, a 3PL, 2 micro-fulfilment centres, 40 stores, 2 drop-ship vendors."""
    heavy = (NodeCapability.HAZMAT, NodeCapability.OVERSIZE)
    nodes = [_node(node_id, NodeKind.DC, town, rng, heavy, 12_000, clock(17, 0)) for node_id, town in DCS]
    nodes.append(
        _node("3PL-NORTHAMPTON", NodeKind.THIRD_PARTY_LOGISTICS, 21, rng, heavy, 5_000, clock(16, 0))
    )
    nodes.append(_node("MFC-LONDON", NodeKind.MICRO_FULFILMENT, 0, rng, (), 1_500, clock(20, 0)))
    nodes.append(_node("MFC-BIRMINGHAM", NodeKind.MICRO_FULFILMENT, 1, rng, (), 1_500, clock(20, 0)))
    for i in range(40):
        town = i % len(TOWNS)
        capabilities = [NodeCapability.BOPIS_PICKUP, NodeCapability.SHIP_TO_STORE_RECEIVE]
        if rng.random() < 0.7:
            capabilities.append(NodeCapability.SHIP_FROM_STORE)
        nodes.append(
            _node(
                f"STORE-{TOWNS[town][0][:4].upper()}-{i:02d}",
                NodeKind.STORE,
                town,
                rng,
                tuple(capabilities),
                150,
                clock(15, 0),
            )
        )
    nodes.append(_node("VEND-HOMEWARE", NodeKind.DROP_SHIP_VENDOR, 8, rng, (), 800, clock(14, 0)))
    nodes.append(_node("VEND-GARDEN", NodeKind.DROP_SHIP_VENDOR, 38, rng, heavy, 400, clock(14, 0)))
    return nodes


def _bands(*pairs: tuple[float, str]) -> tuple[DistanceBand, ...]:
    return tuple(DistanceBand(max_km=km, surcharge=Decimal(s)) for km, s in pairs)


def build_services() -> list[CarrierServiceUpserted]:
    """Six UK services, all priced by distance bands."""
    spec = (
        ("royal-mail-48", "royal-mail", ServiceLevel.STANDARD, 2, False, False, "3.10", "0.20"),
        ("evri-standard", "evri", ServiceLevel.GROUND, 3, False, False, "2.60", "0.18"),
        ("dhl-parcel-uk", "dhl", ServiceLevel.STANDARD, 2, False, True, "3.90", "0.25"),
        ("dpd-next-day", "dpd", ServiceLevel.NEXT_DAY, 1, False, False, "4.20", "0.35"),
        ("ups-express", "ups", ServiceLevel.EXPRESS, 1, False, True, "5.80", "0.30"),
        ("xdp-hazmat-road", "xdp", ServiceLevel.GROUND, 3, True, True, "7.50", "0.40"),
    )
    services = []
    for service_id, carrier, level, transit, hazmat, oversize, base, per_kg in spec:
        services.append(
            CarrierServiceUpserted(
                service_id=service_id,
                carrier=carrier,
                name=service_id.replace("-", " ").title(),
                service_level=level,
                transit_days=transit,
                reliability=0.95,
                hazmat_allowed=hazmat,
                oversize_allowed=oversize,
                countries=("GB",),
                cost=DistanceBandCost(
                    kind="distance_bands",
                    currency="GBP",
                    base=Decimal(base),
                    per_kg=Decimal(per_kg),
                    bands=_bands((80, "0"), (250, "0.90"), (500, "1.80"), (1200, "3.60")),
                ),
            )
        )
    return services


@dataclass(frozen=True)
class Sku:
    sku: str
    weight_kg: Decimal
    price: Decimal
    labels: tuple[ProductLabel, ...]
    vendor: str | None


def build_skus(rng: random.Random, count: int = 400) -> list[Sku]:
    skus = []
    for i in range(count):
        roll = rng.random()
        labels: tuple[ProductLabel, ...] = ()
        if roll < 0.03:
            labels = (ProductLabel.HAZMAT,)
        elif roll < 0.06:
            labels = (ProductLabel.OVERSIZE,)
        elif roll < 0.20:
            labels = (ProductLabel.FRAGILE,)
        vendor = None
        if rng.random() < 0.04:
            vendor = rng.choice(("VEND-HOMEWARE", "VEND-GARDEN"))
        weight = Decimal(str(round(rng.uniform(0.2, 6.0), 3)))
        price = Decimal(str(round(rng.uniform(3, 120), 2)))
        skus.append(Sku(f"SKU-{i:05d}", weight, price, labels, vendor))
    return skus


def build_stock(
    rng: random.Random, nodes: Sequence[NodeUpserted], skus: Sequence[Sku]
) -> dict[tuple[str, str], int]:
    """Units available per (node, SKU): DCs hold most of the range, stores a slice of it."""
    holding = {
        NodeKind.DC: (0.85, 5, 300),
        NodeKind.THIRD_PARTY_LOGISTICS: (0.6, 5, 200),
        NodeKind.MICRO_FULFILMENT: (0.5, 1, 40),
        NodeKind.STORE: (0.35, 1, 8),
    }
    stock: dict[tuple[str, str], int] = {}
    for node in nodes:
        for sku in skus:
            if sku.vendor is not None:
                if sku.vendor == node.node_id:
                    stock[(node.node_id, sku.sku)] = rng.randint(20, 500)
                continue
            if node.kind not in holding:
                continue
            share, low, high = holding[node.kind]
            if rng.random() < share:
                stock[(node.node_id, sku.sku)] = rng.randint(low, high)
    return stock


def build_orders(
    rng: random.Random,
    count: int,
    skus: Sequence[Sku],
    stores: Sequence[str],
    placed: datetime,
    lines: int = 5,
) -> list[OrderCreated]:
    orders = []
    for n in range(count):
        chosen = rng.sample(list(skus), lines)
        roll = rng.random()
        delivery: HomeDelivery | StorePickup
        if roll < 0.70:
            delivery = HomeDelivery(kind="standard")
        elif roll < 0.85:
            delivery = HomeDelivery(kind="express")
        elif roll < 0.95:
            delivery = HomeDelivery(kind="next_day")
        else:
            delivery = StorePickup(kind="bopis", pickup_store_id=rng.choice(stores))
        order_lines = tuple(
            OrderLine(
                line_id=str(i + 1),
                sku=sku.sku,
                quantity=rng.choice((1, 1, 1, 2, 3)),
                unit_price=sku.price,
                unit_weight_kg=sku.weight_kg,
                labels=sku.labels,
                drop_ship_vendor_id=sku.vendor,
            )
            for i, sku in enumerate(chosen)
        )
        transit = {"standard": 3, "express": 2, "next_day": 1, "bopis": 2}[delivery.kind]
        orders.append(
            OrderCreated(
                order_id=f"ORD-{n:06d}",
                channel=rng.choice((Channel.WEB, Channel.WEB, Channel.APP, Channel.MARKETPLACE)),
                customer_id=f"CUST-{rng.randint(1, 99_999):05d}",
                customer_tier=rng.choice(list(CustomerTier)),
                placed_at=placed,
                ship_to=_address("Customer", rng.randrange(len(TOWNS)), rng, jitter=0.08),
                lines=order_lines,
                order_total=sum((line.unit_price * line.quantity for line in order_lines), Decimal(0)),
                currency="GBP",
                delivery=delivery,
                promised_delivery_date=placed.date() + timedelta(days=transit),
                ship_complete=rng.random() < 0.1,
                priority=rng.random() < 0.05,
            )
        )
    return orders


@dataclass
class Fixture:
    network: NetworkView
    stock: StockView
    capacity_used: dict[str, int]
    orders: list[OrderCreated]
    now: datetime


def build_fixture(seed: int, count: int) -> Fixture:
    rng = random.Random(seed)
    nodes = build_nodes(rng)
    network = network_from_events([*nodes, *build_services()])
    skus = build_skus(rng)
    stock = build_stock(rng, nodes, skus)
    capacity_used = {node.node_id: rng.randint(0, node.daily_capacity * 3 // 4) for node in nodes}
    now = datetime(2025, 3, 10, 11, 30, tzinfo=UTC)
    stores = [node.node_id for node in nodes if node.kind is NodeKind.STORE]
    return Fixture(network, stock, capacity_used, build_orders(rng, count, skus, stores, now), now)


# ---------------------------------------------------------------------------
# Baselines
# ---------------------------------------------------------------------------


def _single_node_costs(plan: PlanDecided) -> dict[str, float]:
    """Nodes that could ship the whole order alone, with that cost (from the plan's own verdicts)."""
    every_line = {line.line_id for line in plan.order.lines}
    return {
        c.node_id: c.best_cost
        for c in plan.candidates
        if c.eligible and c.best_cost is not None and set(c.lines) == every_line and not c.reasons
    }


def baselines(plan: PlanDecided, network: NetworkView) -> tuple[float | None, float | None]:
    """(closest node holding every line, first ranked node holding every line): their costs, if any."""
    singles = _single_node_costs(plan)
    if not singles or plan.order.ship_to is None:
        return None, None
    to = plan.order.ship_to

    def distance(node_id: str) -> float:
        at = network.nodes[node_id].location
        return haversine_km(at.latitude, at.longitude, to.latitude, to.longitude)

    closest = singles[min(singles, key=lambda node_id: (distance(node_id), node_id))]
    ranked = next((singles[node_id] for node_id in RANKING if node_id in singles), None)
    return closest, ranked


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


@dataclass(frozen=True)
class Decision:
    """What the run keeps of one decision (not the plan: a heap full of plans slows every GC)."""

    ms: float
    outcome: str
    shipments: int
    cost: float
    #: Costs of the baselines' plans, when both could ship the whole (home-delivery) order from one node.
    closest: float | None
    ranked: float | None


def decide_on(
    fixture: Fixture, policy: Policy, order: OrderCreated, decide_with: Callable[..., PlanDecided] = decide
) -> PlanDecided:
    """The plan for `order` on the fixture's network and stock."""
    return decide_with(
        order,
        network=fixture.network,
        stock=fixture.stock,
        capacity_used=fixture.capacity_used,
        policy=policy,
        now=fixture.now,
    )


def run(fixture: Fixture, policy: Policy, *, warmup: int = 50) -> list[Decision]:
    """Decide every order once (after a warm-up); only `decide` is timed."""

    def once(order: OrderCreated) -> PlanDecided:
        return decide_on(fixture, policy, order)

    for order in fixture.orders[:warmup]:
        once(order)
    decisions: list[Decision] = []
    total = len(fixture.orders)
    step = max(1, total // 10)
    for i, order in enumerate(fixture.orders, start=1):
        started = time.perf_counter_ns()
        plan = once(order)
        ms = (time.perf_counter_ns() - started) / 1e6
        closest, ranked = (None, None)
        if plan.outcome is PlanOutcome.SHIP and isinstance(order.delivery, HomeDelivery):
            closest, ranked = baselines(plan, fixture.network)
        decisions.append(
            Decision(ms, plan.outcome.value, len(plan.shipments), plan.total_cost, closest, ranked)
        )
        if i % step == 0 or i == total:
            print(f"  {i}/{total} decisions", flush=True)
    return decisions


#: Rounds of the compiled and the pure Python core taking turns on the same orders (medians reported).
CORE_ROUNDS = 3


def compare_cores(fixture: Fixture, policy: Policy) -> dict[str, object]:
    """With the decision core compiled: decisions/s of it and of the pure Python source, taking turns
    on the same orders, and how many plans differ between the two (none, or a defect)."""
    core = native.loaded_state()["orchestrator.domain.sourcing"]
    if core != "compiled":
        return {"core": core}
    pure_decide = native.pure_module("orchestrator.domain", "sourcing").decide
    cores: dict[str, Callable[..., PlanDecided]] = {"compiled": decide, "pure": pure_decide}
    rates: dict[str, list[float]] = {name: [] for name in cores}
    plans: dict[str, list[PlanDecided]] = {name: [] for name in cores}
    for round_no in range(CORE_ROUNDS):
        for name, decide_with in cores.items():
            took = 0
            for order in fixture.orders:
                started = time.perf_counter_ns()
                plan = decide_on(fixture, policy, order, decide_with)
                took += time.perf_counter_ns() - started
                if round_no == 0:
                    plans[name].append(plan)
            rates[name].append(len(fixture.orders) / (took / 1e9))
        print(f"  round {round_no + 1}/{CORE_ROUNDS} of the two cores", flush=True)
    median = {name: statistics.median(r) for name, r in rates.items()}
    differ = sum(
        a.model_dump(mode="json") != b.model_dump(mode="json")
        for a, b in zip(plans["compiled"], plans["pure"], strict=True)
    )
    return {
        "core": core,
        "compiled_decisions_per_s": median["compiled"],
        "pure_decisions_per_s": median["pure"],
        "speedup": median["compiled"] / median["pure"],
        "plans_compared": len(fixture.orders),
        "plans_differing": differ,
    }


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def summarise(fixture: Fixture, decisions: list[Decision]) -> dict[str, object]:
    ordered = sorted(d.ms for d in decisions)
    compared = [d for d in decisions if d.closest is not None and d.ranked is not None]
    shipped = [d.shipments for d in decisions if d.outcome == PlanOutcome.SHIP.value]
    return {
        "decisions": len(decisions),
        "nodes": len(fixture.network.nodes),
        "lines_per_order": len(fixture.orders[0].lines) if fixture.orders else 0,
        "p50_ms": _percentile(ordered, 0.50),
        "p95_ms": _percentile(ordered, 0.95),
        "p99_ms": _percentile(ordered, 0.99),
        "max_ms": ordered[-1],
        "mean_ms": statistics.fmean(ordered),
        "decisions_per_s": len(ordered) / (sum(ordered) / 1000),
        "target_p99_ms": TARGET_P99_MS,
        "outcomes": dict(sorted(Counter(d.outcome for d in decisions).items())),
        "shipments_per_shipped_order": _mean([float(n) for n in shipped]) or 0.0,
        "quality": {
            "orders_compared": len(compared),
            "optimiser_mean_cost": _mean([d.cost for d in compared]),
            "closest_node_mean_cost": _mean([d.closest for d in compared if d.closest is not None]),
            "ranked_node_mean_cost": _mean([d.ranked for d in compared if d.ranked is not None]),
        },
    }


def print_tables(result: dict[str, object]) -> None:
    print()
    print(
        f"Decision time: {result['lines_per_order']}-line orders over {result['nodes']} nodes, "
        f"{result['decisions']} decisions"
    )
    print()
    print("| p50 ms | p95 ms | p99 ms | max ms | decisions/s | p99 target |")
    print("|---:|---:|---:|---:|---:|---:|")
    cells = [f"{result[key]:.2f}" for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms")]
    cells += [f"{result['decisions_per_s']:,.0f}", f"< {TARGET_P99_MS:.0f}"]
    print("| " + " | ".join(cells) + " |")
    print()
    print(
        f"Outcomes: {result['outcomes']}; shipments per shipped order "
        f"{result['shipments_per_shipped_order']:.2f}"
    )
    cores = result["cores"]
    assert isinstance(cores, dict)
    print()
    if cores["core"] == "compiled":
        print(f"The compiled and the pure Python core, taking turns ({CORE_ROUNDS} rounds, medians):")
        print()
        print("| compiled decisions/s | pure Python decisions/s | ratio | plans differing |")
        print("|---:|---:|---:|---:|")
        print(
            f"| {cores['compiled_decisions_per_s']:,.0f} | {cores['pure_decisions_per_s']:,.0f} | "
            f"{cores['speedup']:.2f}x | {cores['plans_differing']} of {cores['plans_compared']} |"
        )
    else:
        print("Decision core: pure Python (`python -m orchestrator.native build` compiles it).")
    quality = result["quality"]
    assert isinstance(quality, dict)
    if quality["orders_compared"]:
        print()
        print(
            f"Quality on {quality['orders_compared']} home deliveries that one node could ship whole "
            "(mean cost under the policy's objective, lower is better):"
        )
        print()
        print("| optimiser | closest node with stock | first ranked node with stock |")
        print("|---:|---:|---:|")
        print(
            f"| {quality['optimiser_mean_cost']:.2f} | {quality['closest_node_mean_cost']:.2f} |"
            f" {quality['ranked_node_mean_cost']:.2f} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.decision", description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--decisions", type=int, default=2_000, help="decisions to time (default 2000)")
    parser.add_argument("--seed", type=int, default=20250310, help="seed of the network and orders")
    parser.add_argument("--quick", action="store_true", help="200 decisions: a smoke test, not a measurement")
    parser.add_argument(
        "--no-gc-freeze", action="store_true", help="leave the start-up heap to the cyclic collector"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the JSON result")
    args = parser.parse_args(argv)
    count = 200 if args.quick else args.decisions
    if count < 1:
        parser.error("--decisions must be at least 1")
    print(f"Building a 50-node network and {count} orders (seed {args.seed})...", flush=True)
    fixture = build_fixture(args.seed, count)
    policy = load_policy()
    if not args.no_gc_freeze:
        # What a long-running stage should do after start-up: move what lives for good (the
        # network view, the policy; here also the prebuilt orders) out of the cyclic collector's
        # reach. Otherwise a full collection now and then walks the whole heap: tens of ms.
        gc.collect()
        gc.freeze()
    result = summarise(fixture, run(fixture, policy))
    result["cores"] = compare_cores(fixture, policy)
    result["seed"] = args.seed
    result["gc_frozen"] = not args.no_gc_freeze
    result["measured_on"] = date.today().isoformat()
    print_tables(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
