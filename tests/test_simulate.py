"""The simulated network and order stream, the offline simulation and its optimum, and the CLI."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.contract.common import NodeCapability, NodeKind
from orchestrator.domain.policy import load_policy, parse_policy
from orchestrator.domain.validation import postal_code_valid, validate_order
from orchestrator.sim import build_network, order_stream
from orchestrator.sim.simulate import simulate

_ALTERNATIVE = """
version: dc-first-1
split_cost: 8.0
ship_from_store:
  enabled: false
ranked_nodes: [{dc}]
rank_bonus: 2.0
backorder_policy: hold_for_stock
"""


def _fingerprint(seed: int) -> tuple[object, ...]:
    network = build_network(seed=seed, stores=12, skus=60)
    return (
        tuple(n.model_dump_json() for n in network.nodes),
        tuple(s.model_dump_json() for s in network.services),
        tuple(s.model_dump_json() for s in network.inventory),
        network.skus,
    )


def test_network_is_reproducible_for_a_seed_and_differs_for_another() -> None:
    assert _fingerprint(3) == _fingerprint(3)
    assert _fingerprint(3) != _fingerprint(4)


def test_network_shape() -> None:
    network = build_network(seed=5)
    kinds = [n.kind for n in network.nodes]
    assert kinds.count(NodeKind.DC) == 5
    assert kinds.count(NodeKind.STORE) == 40
    assert kinds.count(NodeKind.THIRD_PARTY_LOGISTICS) == 1
    assert kinds.count(NodeKind.DROP_SHIP_VENDOR) == 2
    dcs = network.nodes_of(NodeKind.DC)
    # The golden triangle first: the first DC stands in the Midlands.
    assert 52.0 < dcs[0].location.latitude < 53.0 and -2.5 < dcs[0].location.longitude < -0.5
    assert sum(NodeCapability.HAZMAT in n.capabilities for n in dcs) == 1
    assert all(NodeCapability.OVERSIZE in n.capabilities for n in dcs)
    assert all(n.timezone == "Europe/London" for n in network.nodes)
    assert all(postal_code_valid("GB", n.location.postal_code) for n in network.nodes)
    assert any(s.hazmat_allowed and s.service_level == "ground" for s in network.services)
    vendors = {n.node_id for n in network.nodes_of(NodeKind.DROP_SHIP_VENDOR)}
    vendor_skus = {s.sku: s.drop_ship_vendor_id for s in network.skus if s.drop_ship_vendor_id}
    for snapshot in network.inventory:
        if snapshot.node_id in vendors:
            assert vendor_skus.get(snapshot.sku) == snapshot.node_id
        else:
            assert snapshot.sku not in vendor_skus


def test_every_generated_order_is_valid_and_the_stream_is_seeded() -> None:
    network = build_network(seed=11)
    orders = order_stream(network, seed=11, count=300)
    assert orders == order_stream(network, seed=11, count=300)
    assert orders != order_stream(network, seed=12, count=300)
    policy = load_policy()
    known = {s.sku for s in network.skus}
    for order in orders:
        verdict = validate_order(
            order, network=network.view(), known_skus=known, policy=policy, now=order.placed_at
        )
        assert verdict.valid, (order.order_id, verdict.reasons)
    kinds = {o.delivery.kind for o in orders}
    assert kinds == {"standard", "express", "next_day", "bopis", "ship_to_store"}
    assert {len(o.lines) for o in orders} <= {1, 2, 3, 4, 5}
    assert any(o.ship_complete for o in orders) and any(o.priority for o in orders)


def test_simulation_is_deterministic_and_the_optimum_is_never_worse() -> None:
    network = build_network(seed=21)
    orders = order_stream(network, seed=21, count=40)
    alternative = parse_policy(_ALTERNATIVE.format(dc=network.dc_ranking[0]), "test")
    policies = [load_policy(), alternative]
    first = simulate(network, orders, policies, seed=21, optimum=True)
    second = simulate(network, orders, policies, seed=21, optimum=True)

    def numbers(result: object) -> list[dict[str, object]]:
        summaries = result.to_json()["strategies"]  # type: ignore[attr-defined]
        return [{k: v for k, v in s.items() if k != "decide_ms_per_order"} for s in summaries]

    assert numbers(first) == numbers(second)
    assert first.optimum is not None and second.optimum is not None
    assert first.optimum.objective == pytest.approx(second.optimum.objective)
    assert first.optimum.optimal
    assert [s.name for s in first.strategies] == [
        "default-2",
        "dc-first-1",
        "closest-node-with-stock",
        "ranked-locations",
    ]
    for strategy in first.strategies:
        assert strategy.orders == len(orders)
        assert first.optimum.objective <= strategy.objective + 1e-6 * max(1.0, strategy.objective), (
            strategy.name
        )


def test_cli_writes_json_and_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    assert main(["simulate", "--orders", "25", "--seed", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "closest-node-with-stock" in printed and "offline optimum" in printed
    assert (out / "simulate.json").read_text().startswith("{")
    assert (out / "simulate.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_spreads_the_stream_over_the_hours_asked_and_refuses_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    network = build_network(seed=4)
    spread = order_stream(network, seed=4, count=25, hours=200)
    assert spread[-1].placed_at - spread[0].placed_at > timedelta(hours=36)
    assert main(["simulate", "--orders", "25", "--hours", "200", "--seed", "4", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["simulate", "--orders", "25", "--hours", "0", "--out", str(tmp_path)]) == 2
    assert "--hours positive" in capsys.readouterr().err
