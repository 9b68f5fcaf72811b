"""Offline simulation: a seeded network on a real map, an order stream, and policy comparison."""

from orchestrator.sim.geography import SimNetwork, Sku, build_network
from orchestrator.sim.orders import order_stream

__all__ = ["SimNetwork", "Sku", "build_network", "order_stream"]
